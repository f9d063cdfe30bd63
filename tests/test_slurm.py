"""The demo workflow submitted through profiles/slurm to a real one-node SLURM cluster on this machine.

Needs Debian's slurm-wlm and munge (apt-get install -y slurm-wlm munge) and root. When the
cluster cannot come up the test fails and says why; it never skips.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "slurm"))
from local_cluster import ClusterError, LocalSlurm  # noqa: E402
from workflow import TEST_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
PARTITION = "inscl"
ACCOUNT = "inscl"
PLACEHOLDERS = {"<your-account>": ACCOUNT, "<your-cpu-partition>": PARTITION, "<your-gpu-partition>": PARTITION}

TARGET = "results/report/index.html"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    # munged wants every directory above its socket traversable, so not under pytest's private tmp.
    root = Path(tempfile.mkdtemp(prefix="inscl-slurm-", dir="/tmp"))
    local = LocalSlurm(root, partition=PARTITION)
    try:
        local.up()
    except (ClusterError, subprocess.SubprocessError, OSError) as error:
        local.down()
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"the local SLURM cluster did not start: {error}", pytrace=False)
    yield local
    local.down()
    shutil.rmtree(root, ignore_errors=True)


def slurm_profile(directory: Path, node_memory_mb: int) -> Path:
    """profiles/slurm with its account/partition placeholders filled in for the local cluster, and
    memory requests above this machine's (SuperNI-scale ingest) lowered to what the node has."""
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    for placeholder, value in PLACEHOLDERS.items():
        assert placeholder in text, f"profiles/slurm lost its {placeholder} placeholder"
        text = text.replace(placeholder, value)
    text = re.sub(r"mem_mb: (\d+)", lambda m: f"mem_mb: {min(int(m.group(1)), node_memory_mb)}", text)
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(text)
    return directory


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake in workdir on its config.yaml; its output goes to a file beside workdir."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(workdir.with_suffix(".out"), "w") as out:
        return subprocess.Popen(
            [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )


def finish(process: subprocess.Popen, timeout: int) -> str:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    workdir = Path(process.args[process.args.index("--directory") + 1])
    output = workdir.with_suffix(".out").read_text(errors="replace")
    assert process.returncode == 0, f"{' '.join(process.args)} failed:\n{output[-6000:]}"
    return output


def run_snakemake(workdir: Path, *args: str, timeout: int) -> str:
    return finish(start_snakemake(workdir, *args), timeout)


def planned_jobs(workdir: Path) -> collections.Counter:
    """Jobs per rule that a run of TARGET will execute, from the dry run's job table."""
    output = run_snakemake(workdir, "-n", "--cores", "2", TARGET, timeout=300)
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = collections.Counter()
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "all":
            counts[match.group(1)] = int(match.group(2))
    return counts


def jobs_in_slurm_logs(workdir: Path) -> tuple[collections.Counter, list[Path]]:
    """Rules executed inside SLURM job steps, read from each job's log (one log per sbatch job).

    The job's own Snakemake prints `rule X:` when it starts the step; the step prints `localrule X:`.
    """
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    executed = collections.Counter()
    for log in logs:
        for rule in re.findall(r"^localrule (\w+):$", log.read_text(errors="replace"), flags=re.M):
            executed[rule] += 1
    return executed, logs


def squeue_records(run_id: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%T|%k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if line.strip()]


@pytest.mark.timeout(60)
def test_cluster_says_why_it_cannot_start(tmp_path):
    """Without the SLURM and munge binaries, bring-up stops with the install command, not a skip."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "slurm" / "local_cluster.py"), "up", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
        timeout=60,
    )
    assert result.returncode == 1
    assert "missing munged, slurmctld, slurmd" in result.stderr
    assert "apt-get install -y slurm-wlm munge" in result.stderr


@pytest.mark.timeout(1500)
def test_demo_through_slurm_equals_local_run(cluster, finished_test_run, tmp_path):
    """The .test demo through sbatch gives the score matrix of the local run of the same config
    (one thread per job in both: deterministic on CPU)."""
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    shutil.copy(TEST_CONFIG, slurm_dir / "config.yaml")
    expected = planned_jobs(slurm_dir)
    profile = slurm_profile(tmp_path / "profile", cluster.memory_mb())
    slurm_run = start_snakemake(
        slurm_dir,
        "--profile",
        str(profile),
        TARGET,
        "--slurm-status-command",
        "squeue",  # no accounting database on the test cluster
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "2",
        "--slurm-keep-successful-logs",
    )
    try:
        output = finish(slurm_run, timeout=1200)
    except AssertionError as error:
        jobs = subprocess.run(["squeue", "--states=all", "--format=%i %T %r %C %m %k"], capture_output=True, text=True)
        raise AssertionError(f"{error}\nSLURM jobs:\n{jobs.stdout}{jobs.stderr}") from None

    # Every job went through sbatch: each SLURM log holds the rules its job ran, and together
    # they are exactly the jobs of the plan; squeue lists one COMPLETED job per log.
    executed, logs = jobs_in_slurm_logs(slurm_dir)
    assert executed == expected, f"rules run inside SLURM {dict(executed)} != planned {dict(expected)}"
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    records = squeue_records(run_id)
    assert len(records) == len(logs), f"{len(records)} SLURM jobs in squeue, {len(logs)} job logs"
    assert {state for _, state, _ in records} == {"COMPLETED"}, records
    assert {Path(log).stem for log in logs} == {job_id for job_id, _, _ in records}
    # Small jobs were grouped: fewer SLURM jobs than workflow jobs, and the groups ran as such.
    comments = {comment for _, _, comment in records}
    assert len(records) < sum(expected.values())
    assert any(comment.startswith("rule_instructions") for comment in comments), comments

    local = pd.read_parquet(finished_test_run / "results" / "metrics" / "score_matrix.parquet")
    remote = pd.read_parquet(slurm_dir / "results" / "metrics" / "score_matrix.parquet")
    keys = ["order", "method", "seed", "stage", "task"]
    assert len(local) > 0
    pd.testing.assert_frame_equal(
        local.sort_values(keys).reset_index(drop=True), remote.sort_values(keys).reset_index(drop=True)
    )
    assert (slurm_dir / TARGET).exists()
