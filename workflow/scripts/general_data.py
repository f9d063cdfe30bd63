"""Rule general_data: the general-data file of general-data replay (replay.general) as rows like the instances."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.data.general import load_general


def main(smk):
    general = job_settings(smk)["replay"]["general"]
    artifacts.write(load_general(general), "general_data", smk.output[0])


run_rule(snakemake, main)  # noqa: F821
