"""Score each task's predictions with its configured metric -> scores.parquet."""
from inscl.scripting import run_rule


def main(smk):
    import pandas as pd

    from inscl.io import write_parquet
    from inscl.scoring import score_predictions

    predictions = pd.read_parquet(smk.input[0])
    write_parquet(score_predictions(predictions, smk.params.evaluation, source=smk.input[0]), smk.output[0])


run_rule(snakemake, main)  # noqa: F821
