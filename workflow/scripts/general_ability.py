"""lm-evaluation-harness on one run's model -> results/general/{run}/results.parquet."""
from inscl.scripting import run_rule


def main(smk):
    from inscl.general import run_harness
    from inscl.io import write_parquet

    table = run_harness(smk.input.model, smk.input.base, smk.params.model, smk.params.general)
    write_parquet(table, smk.output[0])


run_rule(snakemake, main)  # noqa: F821
