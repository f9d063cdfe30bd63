"""Rule tag: intention tags per unique instruction with the configured backend (openai, offline, file)."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.instructions.embed import unique_instructions
from inscl.instructions.tag import tag_instructions


def main(smk):
    settings = job_settings(smk)
    instances = artifacts.read(smk.input.instances, "instances", ["instruction_id", "instruction"])
    instructions = unique_instructions(instances, smk.input.instances)
    rows = tag_instructions(instructions, settings["tagging"], settings.get("embedding"), settings["cache_dir"])
    artifacts.write(rows, "tags_raw", smk.output[0])


run_rule(snakemake, main)  # noqa: F821
