"""Rule judge: the run's model against the base model on the configured prompt sets -> verdicts and win/tie/lose rates."""

from inscl.core import artifacts, runs
from inscl.core.hashing import stable_seed
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    from inscl.evaluation.judge import run_judge, summarize_verdicts

    settings = job_settings(smk)
    run = runs.of_path(smk.input.model)
    verdicts = run_judge(
        smk.input.model,
        smk.input.base,
        settings["judge"],
        settings["evaluation"],
        settings["training"]["template"],
        settings["model"],
        settings["cache_dir"],
        seed=stable_seed("judge", run.name),
    )
    artifacts.write(verdicts, "verdicts", smk.output.verdicts)
    artifacts.write(summarize_verdicts(verdicts), "judge_summary", smk.output.summary)


run_rule(snakemake, main)  # noqa: F821
