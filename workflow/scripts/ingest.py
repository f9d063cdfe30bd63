"""Rule ingest: every configured data source -> instances.parquet and tasks.parquet."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.data.ingest import ingest


def main(smk):
    instances, tasks = ingest(job_settings(smk)["data"])
    artifacts.write(instances, "instances", smk.output.instances)
    artifacts.write(tasks, "tasks", smk.output.tasks)


run_rule(snakemake, main)  # noqa: F821
