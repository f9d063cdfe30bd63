"""Rule metrics: the score matrix, CL metrics per run and their mean +- std over seeds; with the judge
and lm-evaluation-harness enabled, also the win/tie/lose rates and Delta R^G of the final models."""

from inscl.core import artifacts
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    import pandas as pd

    from inscl.evaluation.metrics import (
        build_score_matrix,
        compute_cl_metrics,
        general_deltas,
        icl_metrics,
        judge_rates,
        load_scores,
        summarize,
    )

    settings = job_settings(smk)
    orders, methods, seeds = dict(smk.params.orders), list(smk.params.methods), list(smk.params.seeds)
    seen_only = settings["evaluation"]["tasks"] == "seen"
    scores = load_scores(list(smk.input.chain) + list(smk.input.references))
    matrix = build_score_matrix(scores, orders, methods, seeds, seen_only)
    cl = compute_cl_metrics(matrix, scores, orders, methods, seeds, settings["references"], seen_only)
    if "icl" in smk.input.keys():
        cl = pd.concat([cl, icl_metrics(list(smk.input.icl), orders)], ignore_index=True)
    artifacts.write(matrix, "score_matrix", smk.output.matrix)
    artifacts.write(cl, "cl_metrics", smk.output.per_run)
    artifacts.write(summarize(cl), "summary", smk.output.summary)
    if "judge" in smk.output.keys():
        artifacts.write(judge_rates(list(smk.input.judge)), "judge_rates", smk.output.judge)
    if "general" in smk.output.keys():
        artifacts.write(general_deltas(list(smk.input.general)), "general_delta", smk.output.general)


run_rule(snakemake, main)  # noqa: F821
