"""Rules embed_instructions and embed_examples: sentence embeddings through the content-addressed cache."""
import pandas as pd

from inscl.embedding import embed_examples, embed_instructions, write_table
from inscl.scripting import run_rule


def main(smk):
    instances = pd.read_parquet(smk.input[0])
    build = embed_examples if smk.rule == "embed_examples" else embed_instructions
    write_table(build(instances, smk.params.embedding, smk.params.cache_dir), smk.output[0])


run_rule(snakemake, main)  # noqa: F821
