"""Judge the run's model against the base model on the configured prompt files -> verdicts.parquet."""
from inscl.scripting import run_rule


def main(smk):
    from inscl.io import stable_seed, write_parquet
    from inscl.judge import run_judge, summarize_verdicts

    verdicts = run_judge(
        smk.input.model,
        smk.input.base,
        smk.params.judge,
        smk.params.evaluation,
        smk.params.training["template"],
        smk.params.model,
        smk.params.cache_dir,
        seed=stable_seed("judge", smk.wildcards.run),
    )
    write_parquet(verdicts, smk.output[0])
    summary = summarize_verdicts(verdicts).set_index("set")
    for name, row in summary.iterrows():
        print(f"{name}: win {row.win_rate:.1f}% tie {row.tie_rate:.1f}% lose {row.lose_rate:.1f}% "
              f"(delta {row.delta:+.1f}, n={int(row.n)})")


run_rule(snakemake, main)  # noqa: F821
