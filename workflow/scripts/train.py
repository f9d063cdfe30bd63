"""Rule train (and train_multitask, train_single_task): one training run -> model/ and train_log.parquet
(and optimizer/, the state the next chain stage starts from, under training.optimizer.state carry)."""

from inscl.core import runs
from inscl.core.rule import run_rule
from inscl.core.stages import job_settings
from inscl.training.train import TrainJob, replay_file, run_job


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
    )
    run_job(job)


run_rule(snakemake, main)  # noqa: F821
