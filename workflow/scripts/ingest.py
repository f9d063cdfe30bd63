"""Snakemake adapter: rule ingest -> results/data/instances.parquet and tasks.parquet."""
from inscl.data import ingest
from inscl.io import write_parquet
from inscl.scripting import run_rule


def main(smk):
    instances, tasks = ingest(smk.params.data, smk.params.orders)
    write_parquet(instances, smk.output.instances)
    write_parquet(tasks, smk.output.tasks)


run_rule(snakemake, main)  # noqa: F821
