"""Rule insinfo: InsInfo of every instruction over the configured pool."""
import pandas as pd

from inscl.insinfo import compute_insinfo
from inscl.io import write_parquet
from inscl.scripting import run_rule


def main(smk):
    tags = pd.read_parquet(smk.input.tags)
    instances = pd.read_parquet(smk.input.instances, columns=["task", "split", "instruction_id"])
    table = compute_insinfo(
        tags, instances, smk.params.orders, smk.params.insinfo["pool"], smk.input.tags, smk.input.instances
    )
    write_parquet(table, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
