"""Rule general_ability: lm-evaluation-harness on one run's model -> results.parquet."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    from inscl.evaluation.general_ability import run_harness

    settings = job_settings(smk)
    table = run_harness(smk.input.model, smk.input.base, settings["model"], settings["general"])
    artifacts.write(table, "general", smk.output[0])


run_rule(snakemake, main)  # noqa: F821
