"""DAG build time of `snakemake -n` for the full InsCL grid (configs/inscl_grid.yaml), side by side
with Snakemake's own start-up and the default demo's dry run. Target: grid under 30 s.

    .venv/bin/python benchmarks/dag.py [--repeat 3] [--profile]

The grid's SuperNI path points at the fixture task files (a dry run reads no data). Wall time
is what a user waits; CPU time (user+sys of snakemake) is what the machine spends, and stays
meaningful when other processes share the CPUs. --profile adds a cProfile of one grid dry run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def timed(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return wall, cpu, result.stdout + result.stderr


def dry_run_argv(workdir: Path) -> list[str]:
    return [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "-n",
        "--quiet",
        "rules",
        "--cores",
        "1",
    ]


def job_count(output: str) -> int:
    match = re.search(r"^total\s+(\d+)$", output, flags=re.M)
    return int(match.group(1)) if match else -1


def grid_workdir(root: Path) -> Path:
    workdir = root / "grid"
    tasks = workdir / "superni" / "tasks"
    shutil.copytree(REPO / "tests" / "fixtures" / "cluster" / "superni" / "tasks", tasks)
    config = yaml.safe_load((REPO / "configs" / "inscl_grid.yaml").read_text())
    config["data"]["sources"][0]["path"] = str(tasks)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def demo_workdir(root: Path) -> Path:
    workdir = root / "demo"
    workdir.mkdir()
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    return workdir


def measure(label: str, argv: list[str], cwd: Path, repeat: int) -> tuple[float, float, str]:
    runs = [timed(argv, cwd) for _ in range(repeat)]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    return wall, cpu, runs[-1][2]


def profile_grid(workdir: Path, top: int = 25) -> None:
    """cProfile one in-process grid dry run; print the costliest calls."""
    from snakemake.cli import main as snakemake_main

    argv = dry_run_argv(workdir)[3:]
    profiler = cProfile.Profile()
    cwd = os.getcwd()
    try:
        profiler.enable()
        try:
            snakemake_main(argv)
        except SystemExit:
            pass
        profiler.disable()
    finally:
        os.chdir(cwd)
    print(f"\ncProfile of one grid dry run, top {top} by cumulative time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)
    print(f"top {top} by own time:")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also cProfile one grid dry run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inscl-dag-") as tmp:
        root = Path(tmp)
        grid, demo = grid_workdir(root), demo_workdir(root)
        rows = [
            (
                "snakemake --version (start-up)",
                *measure("version", [*SNAKEMAKE, "--version"], root, args.repeat)[:2],
                None,
            ),
        ]
        wall, cpu, out = measure("demo", dry_run_argv(demo), demo, args.repeat)
        rows.append(("demo config.yaml: snakemake -n", wall, cpu, job_count(out)))
        wall, cpu, out = measure("grid", dry_run_argv(grid), grid, args.repeat)
        rows.append(("InsCL grid: snakemake -n", wall, cpu, job_count(out)))
        print(f"median of {args.repeat} runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        print(f"{'what':36} {'wall s':>8} {'CPU s':>8} {'jobs':>6} {'ms/job (CPU)':>13}")
        for label, wall, cpu, jobs in rows:
            per_job = f"{1000 * cpu / jobs:13.2f}" if jobs else f"{'':13}"
            print(f"{label:36} {wall:8.2f} {cpu:8.2f} {jobs if jobs else '':>6} {per_job}")
        grid_wall = rows[-1][1]
        print(f"grid DAG build: {grid_wall:.1f} s wall (target < 30 s: {'met' if grid_wall < 30 else 'MISSED'})")
        if args.profile:
            profile_grid(grid)


if __name__ == "__main__":
    main()
