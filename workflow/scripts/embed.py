"""Rules embed_instructions and embed_examples: sentence embeddings through the content-addressed cache."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.instructions.embed import embed_examples, embed_instructions


def main(smk):
    settings = job_settings(smk)
    instances = artifacts.read(smk.input[0], "instances")
    if smk.rule == "embed_examples":
        table, name = embed_examples(instances, settings["embedding"], settings["cache_dir"]), "example_embeddings"
    else:
        table, name = embed_instructions(instances, settings["embedding"], settings["cache_dir"]), "embeddings"
    artifacts.write(table, name, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
