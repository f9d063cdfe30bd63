"""Sharded training on the CPU with gloo: two FSDP2 ranks each hold, save and resume half of a
~100M-parameter model, and a resumed run ends bit-identical to an uninterrupted one."""

import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from training_support import MODEL, build_tiny_base, training_settings, write_instances

from inscl.training import distributed
from inscl.training.train import TrainJob, train

DRIVER = Path(__file__).with_name("training_ranks.py")
# ~104M parameters: 8 layers of 12.8M (4 x 1024^2 attention + 3 x 1024 x 2816 MLP) and 0.8M embeddings.
HUNDRED_M = {"layers": 8, "hidden_size": 1024, "heads": 16, "intermediate_size": 2816}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharded")
    return {"folder": folder, "base": build_tiny_base(folder, **HUNDRED_M), "instances": write_instances(folder)}


def make_job(workspace, name, **settings) -> TrainJob:
    run = workspace["folder"] / name
    training = training_settings(
        mode="full", epochs=1, learning_rate=1e-4, batch_size=2, checkpoint_every=2, fsdp=True, threads=2, **settings
    )
    return TrainJob(
        instances=str(workspace["instances"]),
        tasks=["sst2"],
        previous=str(workspace["base"]),
        base=str(workspace["base"]),
        output_model=str(run / "model"),
        output_log=str(run / "train_log.parquet"),
        checkpoints=str(run / "checkpoints"),
        training=training,
        model=MODEL,
        seed=5,
        epochs=1.0,
        label=name,
    )


def run_ranks(job: TrainJob, nproc: int, snapshot: Path | None = None) -> list[dict]:
    """The job on `nproc` processes through the project's launcher; each rank's figures."""
    spec = Path(job.checkpoints).parent / "spec.json"
    job.to_json(spec)
    out = Path(job.checkpoints).parent / "figures"
    command = [sys.executable, str(DRIVER), str(spec), str(out)] + ([str(snapshot)] if snapshot else [])
    distributed.launch(command, nproc, grace_s=60, env={"HF_HUB_OFFLINE": "1"})
    return [json.loads(Path(f"{out}.rank{rank}").read_text()) for rank in range(nproc)]


def weights(job: TrainJob) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(job.output_model) / "model.safetensors")


def resume_from(workspace, snapshot: Path, name: str, nproc: int) -> tuple[TrainJob, list[dict]]:
    job = make_job(workspace, name)
    shutil.copytree(snapshot, job.checkpoints)
    return job, run_ranks(job, nproc)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_two_ranks_hold_save_and_resume_half_of_the_model_each(workspace):
    single = make_job(workspace, "single")
    single_figures = run_ranks(single, 1, snapshot=workspace["folder"] / "single_snapshot")[0]
    _, single_resumed = resume_from(workspace, workspace["folder"] / "single_snapshot", "single_resumed", 1)

    sharded = make_job(workspace, "sharded")
    figures = run_ranks(sharded, 2, snapshot=workspace["folder"] / "sharded_snapshot")
    resumed, resumed_figures = resume_from(workspace, workspace["folder"] / "sharded_snapshot", "resumed", 2)

    assert figures[0]["total_steps"] == 4 and resumed_figures[0]["start_step"] == 2
    assert single_figures["total_parameters"] > 100e6
    report = {
        "single": single_figures,
        "single_resumed": single_resumed[0],
        "ranks": figures,
        "resumed": resumed_figures,
    }
    print(json.dumps(report, indent=1))
    for rank in range(2):
        assert figures[rank]["save_peak_mb"] <= 0.6 * single_figures["save_peak_mb"], report
        assert resumed_figures[rank]["load_peak_mb"] <= 0.6 * single_resumed[0]["load_peak_mb"], report

    expected, got = weights(sharded), weights(resumed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    log, reference_log = pd.read_parquet(resumed.output_log), pd.read_parquet(sharded.output_log)
    assert log["loss"].tolist() == reference_log["loss"].tolist()


@pytest.mark.timeout(600)
def test_ddp_and_fsdp_train_alike_and_fsdp_mixed_precision_stays_close(tmp_path):
    base, instances = build_tiny_base(tmp_path), write_instances(tmp_path)
    losses = {}
    for name, settings in {
        "single": {"fsdp": False},
        "ddp": {"fsdp": False},
        "fsdp": {"fsdp": True},
        "fsdp_bf16": {"fsdp": True, "precision": "bf16"},
    }.items():
        training = training_settings(mode="full", epochs=2, learning_rate=3e-3, batch_size=8, micro_batch_tokens=128)
        job = TrainJob(
            str(instances), ["copy", "sst2"], str(base), str(base), str(tmp_path / name / "model"),
            str(tmp_path / name / "log.parquet"), str(tmp_path / name / "checkpoints"),
            {**training, **settings}, MODEL, 7, 2.0, label=name,
        )  # fmt: skip
        if name == "single":
            train(job)
        else:
            spec = tmp_path / name / "spec.json"
            job.to_json(spec)
            distributed.launch(distributed.worker_command(str(spec)), 2, grace_s=60, env={"HF_HUB_OFFLINE": "1"})
        losses[name] = pd.read_parquet(job.output_log)["loss"]
    assert losses["ddp"].tolist() == pytest.approx(losses["single"].tolist(), rel=1e-5)
    assert losses["fsdp"].tolist() == pytest.approx(losses["ddp"].tolist(), rel=1e-5)
    assert losses["fsdp_bf16"].tolist() == pytest.approx(losses["fsdp"].tolist(), rel=2e-2)
    assert losses["fsdp_bf16"].tolist() != losses["fsdp"].tolist()


GRADIENT_SYNC = """
import json, sys, torch, torch.distributed as dist
from inscl.training import distributed, parallel
from inscl.training.loss import AnswerLoss
from inscl.training.models import load_causal_lm
ranks = distributed.init_from_env(0, 5)
torch.manual_seed(0)
found = {}
for fsdp in (False, True):
    model = AnswerLoss(load_causal_lm(sys.argv[1], {}))
    wrapped = parallel.shard(model, None) if fsdp else parallel.replicate(model, ranks, torch.device("cpu"))
    ids = torch.randint(5, 300, (1, 12)) + ranks.rank  # each rank its own data
    batch = {"input_ids": ids, "labels": ids, "position_ids": torch.arange(12)[None], "attention_mask": None}
    weight = next(p for p in wrapped.parameters() if p.ndim == 2)
    seen = []
    for last in (False, True):
        with parallel.gradient_sync(wrapped, last):
            wrapped(**batch).backward()
        if fsdp:  # FSDP2 reduce-scatters into the sharded .grad only when synchronising
            seen.append(weight.grad is not None)
        else:  # DDP: the same gradient on every rank only after the all-reduce
            grads = [torch.zeros_like(weight.grad) for _ in range(2)]
            dist.all_gather(grads, weight.grad.clone())
            seen.append(torch.equal(grads[0], grads[1]))
    found["fsdp" if fsdp else "ddp"] = seen
if ranks.rank == 0:
    open(sys.argv[2], "w").write(json.dumps(found))
distributed.shutdown(ranks)
"""


@pytest.mark.timeout(300)
def test_gradients_are_synchronised_on_the_last_micro_batch_only(tmp_path):
    base, out = build_tiny_base(tmp_path), tmp_path / "sync.json"
    distributed.launch([sys.executable, "-c", GRADIENT_SYNC, str(base), str(out)], 2, grace_s=30)
    assert json.loads(out.read_text()) == {"ddp": [False, True], "fsdp": [False, True]}


@pytest.mark.timeout(600)
def test_sigterm_to_the_launcher_checkpoints_every_rank_and_the_rerun_resumes(tmp_path):
    import signal
    import subprocess

    from inscl.training.checkpoints import latest_checkpoint

    base, instances = build_tiny_base(tmp_path), write_instances(tmp_path)

    def job(name: str) -> TrainJob:
        training = training_settings(
            mode="lora", epochs=6, learning_rate=3e-3, batch_size=2, checkpoint_every=3, threads=2
        )
        run = tmp_path / name
        return TrainJob(
            str(instances), ["sst2", "arithmetic"], str(base), str(base), str(run / "model"),
            str(run / "log.parquet"), str(run / "checkpoints"), training, MODEL, 3, 6.0, label=name,
        )  # fmt: skip

    def launch(name: str) -> subprocess.Popen:
        spec = tmp_path / f"{name}.json"
        job(name).to_json(spec)
        code = (
            "import sys; from inscl.training import distributed; "
            f"distributed.launch(distributed.worker_command({str(spec)!r}), 2, 120)"
        )
        return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)

    reference = launch("reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    interrupted = job("interrupted")
    launcher = launch("interrupted")
    while latest_checkpoint(interrupted.checkpoints) is None:  # the ranks are in their loop
        assert launcher.poll() is None, launcher.stderr.read()[-3000:]
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode != 0 and "exited with status 143" in stderr
    step = int(latest_checkpoint(interrupted.checkpoints).name.removeprefix("step"))
    assert not Path(interrupted.output_model).exists()

    resumed = launch("interrupted")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    log, reference_log = pd.read_parquet(interrupted.output_log), pd.read_parquet(job("reference").output_log)
    assert 3 <= step < len(reference_log)
    assert log["loss"].tolist() == reference_log["loss"].tolist()
    from safetensors.torch import load_file

    expected = load_file(Path(job("reference").output_model) / "adapter_model.safetensors")
    got = load_file(Path(interrupted.output_model) / "adapter_model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
