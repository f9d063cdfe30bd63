"""Rule train (and train_with_state, train_multitask, train_single_task): one training run -> model/ and
train_log.parquet (and optimizer/, the state the next chain stage starts from, under training.optimizer.state
carry; and the method's stage state under train_with_state)."""

from inscl.core import runs
from inscl.core.methods import METHODS
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.training.train import TrainJob, replay_file, run_job


def extra_pass_file(run) -> str | None:
    """The rows of the epoch after the stage, for a method with an extra pass (inside the replay folder)."""
    if run.kind != "chain" or not METHODS[run.method].extra_pass:
        return None
    return runs.extra_pass_file(run.order, run.method, run.seed, run.stage)


def main(smk):
    settings = job_settings(smk)
    run = runs.of_path(smk.output.model)
    job = TrainJob(
        instances=smk.input.instances,
        tasks=list(smk.params.tasks),
        previous=smk.input.previous,
        base=smk.input.base,
        output_model=smk.output.model,
        output_log=smk.output.train_log,
        checkpoints=run.file("checkpoints"),
        training=settings["training"],
        model=settings["model"],
        seed=int(smk.params.seed),
        epochs=float(smk.params.epochs),
        replay=replay_file(smk.input.replay, run.stage) if "replay" in smk.input.keys() else None,
        label=run.name,
        previous_optimizer=smk.input.get("optimizer"),
        output_optimizer=smk.output.get("optimizer"),
        method=smk.params.method.get("name"),
        method_settings=dict(smk.params.method.get("settings", {})),
        previous_state=smk.input.get("state"),
        output_state=smk.output.get("state"),
        extra_pass=extra_pass_file(run),
    )
    run_job(job)


run_rule(snakemake, main)  # noqa: F821
