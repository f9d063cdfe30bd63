"""A no-op rerun of the default workflow vs Snakemake's own start-up, side by side. Target: < 2x.

    .venv/bin/python benchmarks/rerun.py [--repeat 5] [--directory .] [--imports]

Needs the default workflow to have completed once in --directory (`snakemake --cores all`). If
results/report/index.html is missing, it measures on the finished artifacts that are up to date
and says so. CPU time (user+sys of snakemake) is printed beside wall time because wall time
grows with whatever else shares the CPUs. --imports lists the slowest imports of a no-op run
(python -X importtime): modules that rule files import at parse time are paid on every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from dag import ENV, SNAKEMAKE, timed  # benchmarks/ is on sys.path when run as a script

from inscl.core import artifacts, runs

REPO = Path(__file__).resolve().parents[1]

REPORT = "results/report/index.html"
# Artifacts of the default workflow, upstream first.
ARTIFACTS = [
    *(artifacts.path(name) for name in ("instances", "embeddings", "tags_raw", "tags", "insinfo", "distances")),
    runs.BASE.file("predictions.parquet"),
    runs.BASE.file("scores.parquet"),
    artifacts.path("score_matrix"),
    REPORT,
]


def targets(workdir: Path) -> list[str]:
    """[] (the default target) when the report exists, else the finished artifacts."""
    if (workdir / REPORT).exists():
        return []
    done = [path for path in ARTIFACTS if (workdir / path).exists()]
    if not done:
        sys.exit(f"nothing finished in {workdir}: run `snakemake --cores all` there first")
    return done


def slowest_imports(argv: list[str], workdir: Path, top: int = 10) -> list[tuple[float, str]]:
    """The top-level imports of a run with the most cumulative time, in seconds."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], cwd=workdir, capture_output=True, text=True, env=ENV
    )
    rows = []
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]) / 1e6, parts[2].strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--directory", type=Path, default=REPO)
    parser.add_argument("--imports", action="store_true", help="list the slowest imports of a no-op run")
    args = parser.parse_args()
    workdir = args.directory.resolve()
    chosen = targets(workdir)
    rerun = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--cores", "all", *chosen]
    _, _, check = timed([*rerun, "-n"], workdir)
    if "Nothing to be done" not in check:
        sys.exit(f"the workflow in {workdir} is not complete for {chosen or 'the default target'}:\n{check[-2000:]}")

    version = [timed([*SNAKEMAKE, "--version"], workdir) for _ in range(args.repeat)]
    noop = []
    for _ in range(args.repeat):
        wall, cpu, output = timed(rerun, workdir)
        assert "Nothing to be done" in output, output[-2000:]
        noop.append((wall, cpu))

    def median(rows, i):
        return statistics.median(r[i] for r in rows)

    print(f"median of {args.repeat} runs in {workdir}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("targets: " + (", ".join(chosen) + f" ({REPORT} not built yet)" if chosen else "the default (report)"))
    print(f"{'what':34} {'wall s':>8} {'CPU s':>8}")
    print(f"{'snakemake --version':34} {median(version, 0):8.2f} {median(version, 1):8.2f}")
    print(f"{'no-op snakemake --cores all':34} {median(noop, 0):8.2f} {median(noop, 1):8.2f}")
    ratio_wall = median(noop, 0) / median(version, 0)
    ratio_cpu = median(noop, 1) / median(version, 1)
    print(
        f"no-op / start-up: {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU (target < 2x: "
        f"{'met' if ratio_wall < 2 else 'MISSED'})"
    )
    if args.imports:
        print("slowest top-level imports of a no-op run (cumulative s):")
        for seconds, module in slowest_imports(rerun, workdir):
            print(f"  {seconds:6.2f}  {module}")


if __name__ == "__main__":
    main()
