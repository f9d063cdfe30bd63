"""Resource honesty: a training job runs on exactly the GPUs it asks for or fails with one line,
the SLURM profile keeps jobs on one node and stops training in time, and the evaluation rules
ask for evaluation's resources."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from training_support import MODEL, build_tiny_base, training_settings, write_instances

from inscl.core import stages
from inscl.core.config import load_config, validate_config
from inscl.core.io import InputError
from inscl.training import distributed
from inscl.training.train import StageTrainer, TrainJob, run_job

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
TRAIN_RULES = ("train", "train_multitask", "train_single_task", "train_with_state")


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> TrainJob:
    folder = tmp_path_factory.mktemp("resources")
    base, instances = build_tiny_base(folder), write_instances(folder)
    return TrainJob(
        str(instances), ["copy"], str(base), str(base), str(folder / "model"), str(folder / "log.parquet"),
        str(folder / "checkpoints"), training_settings(mode="full"), MODEL, 0, 1.0, label="resources",
    )  # fmt: skip


def with_training(job: TrainJob, **settings) -> TrainJob:
    return TrainJob(**{**job.__dict__, "training": {**job.training, **settings}})


# ------------------------------------------------------------------ GPUs


def test_fewer_gpus_than_requested_is_an_error_naming_both_counts():
    with pytest.raises(InputError) as error:
        distributed.process_count(8, visible_gpus=2)
    message = one_line(error)
    assert "training.gpus is 8" in message and "only 2 GPU(s) are visible" in message
    assert distributed.process_count(4, visible_gpus=8) == 4 and distributed.process_count(0, visible_gpus=8) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("gpus", [1, 2])
def test_gpus_without_cuda_is_an_error_before_any_work(job, gpus):
    with pytest.raises(InputError) as error:
        run_job(with_training(job, gpus=gpus))
    message = one_line(error)
    assert f"training.gpus is {gpus}" in message and "no CUDA device" in message and "gpus: 0" in message
    with pytest.raises(InputError, match="no CUDA device"):
        StageTrainer(with_training(job, gpus=gpus), distributed.Ranks())
    assert not Path(job.output_model).exists()


def test_settings_that_cannot_work_together_are_one_line_errors(job):
    lora = training_settings(mode="lora")
    with pytest.raises(InputError) as error:
        StageTrainer(with_training(job, **{**lora, "fsdp": True}), distributed.Ranks()).setup()
    assert "training.fsdp" in one_line(error) and "LoRA" in str(error.value)
    carry = {**lora, "optimizer": {**lora["optimizer"], "state": "carry"}}
    carry["lora"] = {**carry["lora"], "merge_after_stage": True}
    with pytest.raises(InputError) as error:
        StageTrainer(with_training(job, **carry), distributed.Ranks()).setup()
    assert "training.optimizer.state" in one_line(error)


# ------------------------------------------------------------------ the launcher


WORKER = """
import os, signal, sys, time
rank = int(os.environ["RANK"])
mode = sys.argv[1]
if mode == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "save_on_term":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
if mode == "fail" and rank == 1:
    sys.exit(3)
open(os.environ["MARK"] + f".{rank}", "w").close()
time.sleep(60)
"""


def launch_in_background(tmp_path, mode: str, grace_s: float) -> subprocess.Popen:
    """The project's launcher in a process of its own, running two WORKER processes."""
    code = (
        "import sys; from inscl.training import distributed; "
        f"distributed.launch([sys.executable, '-c', {WORKER!r}, {mode!r}], 2, {grace_s}, env={{'MARK': {str(tmp_path / 'up')!r}}})"
    )
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)


def wait_for_workers(tmp_path, process):
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"up.{rank}").exists() for rank in range(2)):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_sigterm_reaches_every_process_which_may_take_the_grace_period(tmp_path):
    launcher = launch_in_background(tmp_path, "save_on_term", grace_s=30)
    wait_for_workers(tmp_path, launcher)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=60)
    assert launcher.returncode != 0 and "exited with status 143" in stderr


@pytest.mark.timeout(120)
def test_processes_still_running_after_the_grace_period_are_killed(tmp_path):
    launcher = launch_in_background(tmp_path, "ignore_term", grace_s=1)
    wait_for_workers(tmp_path, launcher)
    started = time.monotonic()
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=60)
    assert time.monotonic() - started < 30 and f"status {-signal.SIGKILL}" in stderr


@pytest.mark.timeout(120)
def test_a_failed_process_stops_the_others_and_fails_the_job(tmp_path):
    with pytest.raises(RuntimeError, match="training process 1 of 2 exited with status 3"):
        distributed.launch([sys.executable, "-c", WORKER, "fail"], 2, 5, env={"MARK": str(tmp_path / "up")})


# ------------------------------------------------------------------ the SLURM profile and the rules' resources


def workflow_rules() -> set[str]:
    names = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        names |= set(re.findall(r"^rule (\w+):", text, re.M)) | set(re.findall(r"^use rule \w+ as (\w+)", text, re.M))
    return names


def test_the_profile_names_only_rules_that_exist():
    named = set(PROFILE["set-resources"]) | set(PROFILE["groups"])
    assert named - workflow_rules() == set()


def test_slurm_jobs_stay_on_one_node_and_training_gets_sigterm_before_its_limit():
    assert PROFILE["default-resources"]["nodes"] == 1
    grace = validate_config({"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": ["a", "b"]}})
    grace = grace["training"]["stop_grace_s"]
    for rule in TRAIN_RULES:
        lead = re.fullmatch(r"'--signal=TERM@(\d+)'", PROFILE["set-resources"][rule]["slurm_extra"])
        assert lead and int(lead.group(1)) > grace, rule
    # Every rule sized by the training or evaluation section (their GPUs) runs on the GPU partition.
    sized = set(stages.RESOURCE_SECTION) | {a for a, rule in stages.ALIASES.items() if rule in stages.RESOURCE_SECTION}
    on_gpus = {rule for rule, res in PROFILE["set-resources"].items() if "gpu" in res.get("slurm_partition", "")}
    assert on_gpus == sized


def section_of(rule: str) -> str | None:
    return stages.RESOURCE_SECTION.get(stages.ALIASES.get(rule, rule))


def test_evaluation_jobs_ask_for_evaluation_resources_and_base_model_for_none():
    config = load_config(ROOT / "config.yaml")
    config["training"].update(gpus=8, mem_mb=256000, threads=32, runtime=720)
    config["evaluation"].update(gpus=1, mem_mb=64000, threads=8, runtime=120)
    evaluation_rules = [
        rule for rule in (*stages.RESOURCE_SECTION, *stages.ALIASES) if section_of(rule) == "evaluation"
    ]
    assert {"evaluate", "predict_shard", "judge", "general_ability"} <= set(evaluation_rules)
    for rule in evaluation_rules:
        resources = stages.resources(config, rule)
        assert (resources["gpu"], resources["mem_mb"], resources["runtime"]) == (1, 64000, 120), rule
        assert stages.threads(config, rule) == 8
    assert stages.resources(config, "train")["gpu"] == 8 and stages.threads(config, "train") == 32
    assert "gpu" not in stages.resources(config, "base_model") and stages.threads(config, "base_model") == 1
