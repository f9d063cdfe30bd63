"""Rule icl: the base model answers every task's test set after demonstrations from its training split."""

from inscl.core import artifacts, runs
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings


def main(smk):
    from inscl.evaluation.backends import open_backend
    from inscl.evaluation.icl import run_icl

    settings = job_settings(smk)
    seed = int(smk.wildcards.seed)
    instances = artifacts.read(smk.input.instances, "instances")
    backend, tokenizer = open_backend(  # the base model itself, served as the base run
        settings["evaluation"], smk.input.base, smk.input.base, settings["model"], runs.BASE.name, smk.threads
    )
    try:
        result = run_icl(
            instances,
            list(smk.params.tasks),
            backend,
            tokenizer,
            settings["evaluation"],
            settings["icl"],
            settings["training"]["template"],
            seed,
            smk.output.predictions,
            label=f"icl seed {seed}",
            model_folders=[smk.input.base],
        )
    finally:
        backend.close()
    artifacts.write(result.scores, "scores", smk.output.scores)
    artifacts.write(result.demonstrations, "icl_demonstrations", smk.output.demonstrations)
    artifacts.write(result.shots, "icl_shots", smk.output.shots)


run_rule(snakemake, main)  # noqa: F821
