"""Per-task answer lengths against one length for all tasks, side by side on a finished run's models: tokens
generated, time, and whether any prediction or score changes.

    .venv/bin/python benchmarks/answer_lengths.py --results results --fixed 12     # the demo (config.yaml)

Every model under <results>/runs is scored on the tasks the workflow scores it on (evaluation.tasks: all)
with the hf backend, once with max_new_tokens = --fixed for every task and once with max_new_tokens: auto
(inscl.evaluation.lengths), greedy, on the test rows the config selects (--max-test-per-task).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from inscl.core import artifacts, runs
from inscl.evaluation.backends import open_backend
from inscl.evaluation.predict import predict, select_test_rows
from inscl.evaluation.score import score_predictions


def models_of(results: Path) -> list[runs.Run]:
    found = []
    for config in sorted((results / "runs").rglob("config.json")):
        try:
            found.append(runs.of_path(config.parent))
        except ValueError:
            continue
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--fixed", type=int, default=12, help="the one max_new_tokens to compare with")
    parser.add_argument("--max-test-per-task", type=int, default=60)
    parser.add_argument("--template", default="alpaca")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    instances = artifacts.read(results / "data" / "instances.parquet", "instances")
    tasks = sorted(instances["task"].unique())
    settings = {
        "fixed": {"max_new_tokens": args.fixed},
        "auto": {"max_new_tokens": "auto"},
    }
    totals = {name: {"tokens": 0, "seconds": 0.0, "frames": []} for name in settings}
    lengths_shown = False
    for run in models_of(results):
        scored = [run.task] if run.kind == "single_task" else tasks
        rows = select_test_rows(instances, scored, args.max_test_per_task)
        model_dir = str(results / "runs" / run.name / "model")
        base_dir = str(results / "runs" / "base" / "model")
        for name, lengths in settings.items():
            evaluation = {"backend": "hf", "batch_size": 32, "metrics": {"default": "exact_match"}, **lengths}
            backend, tokenizer = open_backend(evaluation, model_dir, base_dir, {}, run.name)
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                frame, _ = predict(
                    rows,
                    instances,
                    backend,
                    tokenizer,
                    evaluation,
                    Path(folder) / "p.parquet",
                    args.template,
                    progress=False,
                )
                totals[name]["seconds"] += time.perf_counter() - start
            totals[name]["tokens"] += int(frame["generated_tokens"].sum())
            totals[name]["frames"].append(frame.assign(run=run.name))
            if name == "auto" and not lengths_shown:
                print("auto max_new_tokens:", frame.groupby("task")["max_new_tokens"].first().to_dict())
                lengths_shown = True
    fixed, auto = (pd.concat(totals[n]["frames"], ignore_index=True) for n in ("fixed", "auto"))
    print(f"{len(models_of(results))} models, {len(fixed)} predictions each way")
    print(f"{'':28}{f'max_new_tokens {args.fixed}':>22}{'auto (per task)':>22}")
    print(f"{'generated tokens':28}{totals['fixed']['tokens']:22d}{totals['auto']['tokens']:22d}")
    print(f"{'generation s (incl. prompts)':28}{totals['fixed']['seconds']:22.1f}{totals['auto']['seconds']:22.1f}")
    print(
        f"{'answers cut by the limit':28}{(fixed['finish'] == 'length').sum():22d}{(auto['finish'] == 'length').sum():22d}"
    )
    same = (fixed["prediction"] == auto["prediction"]).sum()
    print(
        f"identical predictions: {same}/{len(fixed)}; tokens auto/fixed: {totals['auto']['tokens'] / totals['fixed']['tokens']:.3f}"
    )
    score = {
        n: score_predictions(f, {"metrics": {"default": "exact_match"}})["score"].mean()
        for n, f in (("fixed", fixed), ("auto", auto))
    }
    print(f"mean exact match over all predictions' tasks: fixed {score['fixed']:.2f}, auto {score['auto']:.2f}")


if __name__ == "__main__":
    main()
