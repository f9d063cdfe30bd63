"""Rule rationales (RCL): a rationale per training example, and the instances with rationale + answer targets."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.instructions.rationales import write_rationales


def main(smk):
    settings = job_settings(smk)
    instances = artifacts.read(smk.input[0], "instances")
    table, rcl_instances = write_rationales(
        instances, list(smk.params.tasks), settings["rcl"], settings.get("cache_dir")
    )
    artifacts.write(table, "rationales", smk.output.rationales)
    artifacts.write(rcl_instances, "rcl_instances", smk.output.instances)


run_rule(snakemake, main)  # noqa: F821
