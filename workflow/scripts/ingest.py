"""Rule ingest: every configured data source -> instances.parquet, tasks.parquet and dropped.parquet."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.data.ingest import ingest


def main(smk):
    ingested = ingest(job_settings(smk)["data"])
    artifacts.write(ingested.instances, "instances", smk.output.instances)
    artifacts.write(ingested.tasks, "tasks", smk.output.tasks)
    artifacts.write(ingested.dropped, "dropped", smk.output.dropped)


run_rule(snakemake, main)  # noqa: F821
