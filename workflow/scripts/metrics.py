"""Score matrix, CL metrics per run and their mean +- std over seeds."""
from inscl.scripting import run_rule


def main(smk):
    from inscl.io import write_parquet
    from inscl.metrics import build_score_matrix, compute_cl_metrics, load_scores, summarize

    orders, methods, seeds = dict(smk.params.orders), list(smk.params.methods), list(smk.params.seeds)
    references = list(smk.params.references)
    scores = load_scores(list(smk.input.chain) + list(smk.input.references))
    matrix = build_score_matrix(scores, orders, methods, seeds)
    cl = compute_cl_metrics(matrix, scores, orders, methods, seeds, references)
    write_parquet(matrix, smk.output.matrix)
    write_parquet(cl, smk.output.per_run)
    write_parquet(summarize(cl), smk.output.summary)


run_rule(snakemake, main)  # noqa: F821
