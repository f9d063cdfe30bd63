"""Task distances: all pairs of 16 tasks x 50 instructions, and one pair of 5,000-point sets solved
exactly (our sized, checked cap vs POT's default cap) and with entropic Sinkhorn.

    .venv/bin/python benchmarks/distances.py [--tasks 16 --instructions 50 --points 5000 --dim 384]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import ot

from inscl.replay.distances import cosine_cost, task_distances, wasserstein


def clustered_sets(n_sets: int, n_points: int, dim: int, seed: int):
    """Unit vectors around one random centre per set (like the instructions of a task)."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n_sets):
        centre = rng.normal(size=dim)
        points = centre / np.linalg.norm(centre) + rng.normal(scale=0.6 / np.sqrt(dim), size=(n_points, dim)) * 3
        sets.append(points / np.linalg.norm(points, axis=1, keepdims=True))
    return sets, rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--instructions", type=int, default=50)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--regs", type=float, nargs="+", default=[0.05, 0.01])
    args = parser.parse_args()

    sets, rng = clustered_sets(args.tasks, args.instructions, args.dim, 0)
    point_sets = {f"task{k:02d}": (x, rng.integers(1, 400, len(x)).astype(float)) for k, x in enumerate(sets)}
    start = time.perf_counter()
    table = task_distances(point_sets)
    seconds = time.perf_counter() - start
    print(
        f"{args.tasks} tasks x {args.instructions} instructions: {len(table)} ordered pairs "
        f"({len(table) // 2} solves) in {seconds:.2f} s, all converged: {bool(table['converged'].all())}, "
        f"W1 range {table['distance'].min():.4f}..{table['distance'].max():.4f}"
    )

    (x, y), _ = clustered_sets(2, args.points, args.dim, 1)
    n = args.points
    print(f"\n2 tasks x {n:,} points ({args.dim}-d), uniform weights:")
    start = time.perf_counter()
    cost = cosine_cost(x, y)
    uniform = np.full(n, 1.0 / n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default_value, default_log = ot.emd2(uniform, uniform, cost, log=True)
    default_seconds = time.perf_counter() - start
    exact = wasserstein(x, y)
    print(
        f"  POT emd2, default cap 100,000  : W1 = {default_value:.6f}  {default_seconds:7.2f} s  "
        f"result_code {default_log['result_code']} ({'optimal' if default_log['result_code'] == 1 else 'NOT converged'})"
    )
    print(
        f"  ours, emd (cap {exact.max_iter:,}) : W1 = {exact.distance:.6f}  {exact.seconds:7.2f} s  converged {exact.converged}"
    )
    for reg in args.regs:
        entropic = wasserstein(x, y, solver="sinkhorn", reg=reg)
        print(
            f"  ours, {entropic.solver} reg {reg:<6}: W1 = {entropic.distance:.6f}  {entropic.seconds:7.2f} s  "
            f"{entropic.n_iter} iterations, error vs exact {entropic.distance - exact.distance:+.6f}"
        )


if __name__ == "__main__":
    main()
