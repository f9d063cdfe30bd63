"""Running the workflow from tests: one way to call Snakemake, and to read what a dry run plans."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
CHECKOUT_PARTS = ("Snakefile", "workflow", "src", "profiles", "envs", "config.yaml", ".test")


def snakemake(
    workdir: Path,
    *args: str,
    snakefile: Path | None = None,
    env: dict | None = None,
    check: bool = True,
    timeout: int = 1200,
) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 <args>` in `workdir` on `workdir/config.yaml` (the repo's Snakefile by
    default). With another Snakefile, its jobs import the package next to it, not the repo's."""
    package = {"PYTHONPATH": str(Path(snakefile).parent / "src")} if snakefile else {}
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile or REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    result = subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **package, **(env or {})},
    )
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def planned_jobs(workdir: Path, *args: str, snakefile: Path | None = None) -> list[tuple[str, str, str]]:
    """(rule, wildcards, reason) of every job a dry run of `workdir` would execute."""
    output = snakemake(workdir, "--dry-run", *args, snakefile=snakefile)
    text = output.stdout + output.stderr
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        header = re.match(r"(?:local)?rule (\w+):", block)
        if header:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            reason = re.search(r"^\s+reason: (.*)$", block, re.MULTILINE)
            jobs.append((header.group(1), wildcards.group(1) if wildcards else "", reason.group(1) if reason else ""))
    return [job for job in jobs if job[0] != "all"]


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def read_config(path: Path = TEST_CONFIG) -> dict:
    return yaml.safe_load(Path(path).read_text())


def copy_checkout(target: Path) -> Path:
    """A copy of the code a run depends on, so that a test may edit it; returns its Snakefile."""
    target.mkdir(parents=True, exist_ok=True)
    for part in CHECKOUT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target / part)
    return target / "Snakefile"
