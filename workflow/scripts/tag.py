"""Rule tag: intention tags per unique instruction with the configured backend (openai, offline, file)."""
import pandas as pd

from inscl.embedding import unique_instructions
from inscl.scripting import run_rule
from inscl.tagging import tag_instructions, write_tags_raw


def main(smk):
    instances = pd.read_parquet(smk.input.instances, columns=["instruction_id", "instruction"])
    instructions = unique_instructions(instances, smk.input.instances)
    rows = tag_instructions(instructions, smk.params.tagging, smk.params.embedding, smk.params.cache_dir)
    write_tags_raw(rows, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
