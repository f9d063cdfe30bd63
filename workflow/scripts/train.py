"""Snakemake adapter: rules train_stage, train_multitask, train_single_task -> model/ and train_log.parquet."""
from pathlib import Path

from inscl.scripting import run_rule
from inscl.training import TrainJob, epochs_for_stage, replay_file, run_job, run_seed


def main(smk):
    training = dict(smk.params.training)
    position, n_tasks = smk.params.epoch_slot or (None, None)
    replay_dir = getattr(smk.input, "replay", None)
    job = TrainJob(
        instances=smk.input.instances,
        tasks=list(smk.params.tasks),
        previous=smk.input.previous,
        base=smk.input.base,
        output_model=smk.output.model,
        output_log=smk.output.train_log,
        checkpoints=smk.params.checkpoints,
        training=training,
        model=dict(smk.params.model),
        seed=run_seed(dict(smk.wildcards)),
        epochs=epochs_for_stage(training["epochs"], position, n_tasks),
        replay=replay_file(replay_dir, int(smk.params.stage)) if replay_dir else None,
        label=str(Path(smk.output.model).parent),
    )
    run_job(job)


run_rule(snakemake, main)  # noqa: F821
