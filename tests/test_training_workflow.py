"""The training rules' DAG: a carried optimizer state goes from each chain stage to the next and is
deleted once read; training.keep_stage_models: false also deletes the chain's stage models once used."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE = "results/runs/demo/no_replay/seed0/stage{}"


def snakemake(workdir: Path, config: dict, *args: str) -> str:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    run = subprocess.run(
        [*command, "--configfile", str(workdir / "config.yaml"), *args], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    return run.stdout + run.stderr


@pytest.fixture
def config():
    config = yaml.safe_load((ROOT / ".test" / "config.yaml").read_text())
    config["training"]["optimizer"] = {"state": "carry"}
    return config


def test_a_carried_optimizer_state_feeds_the_next_stage(tmp_path, config):
    plan = snakemake(tmp_path, config, "-n", f"{STAGE.format(2)}/model")
    stage2 = plan[plan.index(f"output: {STAGE.format(2)}/model") - 400 :]
    assert f"{STAGE.format(1)}/optimizer" in stage2.split("output:")[0]
    assert f"{STAGE.format(2)}/optimizer" in stage2


@pytest.mark.parametrize("keep", [True, False])
def test_what_is_temporary(tmp_path, config, keep):
    config["training"]["keep_stage_models"] = keep
    for folder in (f"{STAGE.format(1)}/model", f"{STAGE.format(1)}/optimizer", "results/runs/multitask/seed0/model"):
        (tmp_path / folder).mkdir(parents=True)
    deleted = {
        line.removeprefix("Would delete ").strip()
        for line in snakemake(tmp_path, config, "--delete-temp-output", "-n").splitlines()
        if line.startswith("Would delete")
    }
    expected = {f"{STAGE.format(1)}/optimizer"} | (set() if keep else {f"{STAGE.format(1)}/model"})
    assert deleted == expected
