"""Rule insinfo: InsInfo of every instruction over the configured pool."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.instructions.insinfo import compute_insinfo


def main(smk):
    settings = job_settings(smk)
    table = compute_insinfo(
        artifacts.read(smk.input.tags, "tags"),
        artifacts.read(smk.input.instances, "instances", ["task", "split", "instruction_id"]),
        list(smk.params.tasks),
        settings.get("orders", {}),
        settings["insinfo"]["pool"],
        smk.input.tags,
        smk.input.instances,
    )
    artifacts.write(table, "insinfo", smk.output[0])


run_rule(snakemake, main)  # noqa: F821
