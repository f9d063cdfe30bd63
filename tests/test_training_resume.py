"""A training job killed mid-stage resumes from its last checkpoint and ends with the same weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from training_support import MODEL, build_tiny_base, training_settings, write_instances

from inscl.training.checkpoints import latest_checkpoint
from inscl.training.train import TrainJob, train

THREADS = 1


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    return {"folder": folder, "base": build_tiny_base(folder), "instances": write_instances(folder)}


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)


def make_job(workspace, name, **settings) -> TrainJob:
    run = workspace["folder"] / name
    # Small batches make many steps; LoRA dropout makes the RNG state matter on resume.
    training = training_settings(
        **{
            "mode": "lora",
            "epochs": 4,
            "learning_rate": 3e-3,
            "batch_size": 2,
            "micro_batch_tokens": 256,
            "checkpoint_every": 4,
            **settings,
        }
    )
    return TrainJob(
        instances=str(workspace["instances"]),
        tasks=["sst2", "arithmetic"],
        previous=str(workspace["base"]),
        base=str(workspace["base"]),
        output_model=str(run / "model"),
        output_log=str(run / "train_log.parquet"),
        checkpoints=str(run / "checkpoints"),
        training=training,
        model=MODEL,
        seed=11,
        epochs=training["epochs"],
        label=name,
    )


def saved_step(job: TrainJob) -> int:
    checkpoint = latest_checkpoint(job.checkpoints)
    return int(checkpoint.name.removeprefix("step")) if checkpoint else 0


def start_and_kill(job: TrainJob, sig: int, after_step: int) -> int:
    """Run the job in a subprocess, kill it once a checkpoint of `after_step` or later exists,
    return its exit status."""
    spec = Path(job.checkpoints).parent / "spec.json"
    job.to_json(spec)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "inscl.training.train", "--spec", str(spec), "--threads", str(THREADS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while saved_step(job) < after_step:
        assert process.poll() is None, f"training ended before any checkpoint: {process.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.02)
    process.send_signal(sig)
    process.communicate(timeout=120)
    assert not Path(job.output_model).exists(), "the job finished before it was killed"
    return process.returncode


def weights(job: TrainJob) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(job.output_model) / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(workspace):
    job = make_job(workspace, "uninterrupted")
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    summary = train(job)
    torch.set_num_threads(threads)
    assert summary["steps_run"] == summary["total_steps"] >= 30
    return job, summary


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "sig, cadence",
    [
        (signal.SIGTERM, {}),
        (signal.SIGKILL, {}),
        (signal.SIGKILL, {"checkpoint_every": 1000, "checkpoint_every_minutes": 1e-6}),
    ],
    ids=["SIGTERM", "SIGKILL", "SIGKILL-minutes"],
)
def test_killed_job_resumes_and_matches_an_uninterrupted_run(workspace, uninterrupted, sig, cadence):
    """A job killed after a checkpoint (every 4 steps, or every N minutes) ends as if never killed;
    the cadence is a runtime setting, so it may differ between the runs."""
    reference, reference_summary = uninterrupted
    name = f"killed_{sig.name}_{len(cadence)}"
    job = make_job(workspace, name, **cadence)
    status = start_and_kill(job, sig, after_step=reference_summary["total_steps"] // 3)
    if sig == signal.SIGTERM:
        assert status == 143  # saved a checkpoint, then exited non-zero
    else:
        assert status == -signal.SIGKILL
    checkpoint = latest_checkpoint(job.checkpoints)
    step = json.loads((checkpoint / "state.json").read_text())["step"]
    assert 0 < step < reference_summary["total_steps"]
    shutil.copytree(job.checkpoints, workspace["folder"] / f"changed_{name}" / "checkpoints")

    job.training.update(checkpoint_every=4, checkpoint_every_minutes=30)
    summary = train(job)
    assert summary["start_step"] == step
    assert summary["steps_run"] == reference_summary["total_steps"] - step < reference_summary["total_steps"]
    expected, got = weights(reference), weights(job)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    log, reference_log = pd.read_parquet(job.output_log), pd.read_parquet(reference.output_log)
    assert log["step"].tolist() == reference_log["step"].tolist()
    assert log["loss"].tolist() == reference_log["loss"].tolist()
    assert not Path(job.checkpoints).exists()

    # The same checkpoint is not resumed once a setting that shapes training has changed.
    changed = make_job(workspace, f"changed_{name}", epochs=1)
    assert latest_checkpoint(changed.checkpoints) is not None
    summary = train(changed)
    assert summary["start_step"] == 0 and summary["steps_run"] == summary["total_steps"]
