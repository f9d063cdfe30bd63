"""Training-step cost on this machine: packed padding-free micro-batches against padded ones on the same
steps, and the packed step against the bare model's forward + backward on the same tensors.

    .venv/bin/python benchmarks/training.py [--steps 40] [--threads 2] [--batch-size 64]

Data: the demo tasks (short prompts) plus real SuperNI excerpts (long prompts, about 10% of the
examples), i.e. the mixed lengths of instruction data, over two epochs. The model is config.yaml's
tiny LLaMA. Each mode (full, LoRA) runs in its own process, where three things take turns on every step:

- packed: StageTrainer's optimizer step as training runs it (collation, forward, backward,
  clipping, update), with `training.packing: true`: one packed row per micro-batch;
- padded: the same step of a second trainer with `training.packing: false`: one padded row per
  example, the same examples;
- bare: the model alone (transformers' own loss) forward + backward on the packed step's tensors.

Each step runs `--repeats` times per layout (the fastest run counts, as the least disturbed by other
processes). R = packed / padded throughput (median over steps of the time ratio), L = padded tokens /
real tokens of the padded layout (what removing all padding could gain at best), F = R / L, and
B = packed step time / bare time. The last line reads

    packing: packed/padded R, limit L, F of the limit, step/bare B

for full fine-tuning (the table shows LoRA too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FIXTURES = ROOT / "tests" / "fixtures" / "training"


def benchmark_rows() -> pd.DataFrame:
    """Instances: the demo tasks' training split plus the SuperNI excerpts repeated to ~10% of the rows."""
    from inscl.data.demo import generate_demo

    rows = pd.DataFrame(generate_demo(0, 240, 1))
    rows = rows[rows["split"] == "train"].assign(instance_id=lambda d: d["task"] + "-" + d["index"].astype(str))
    superni = []
    for path in sorted(FIXTURES.glob("task*.json")):
        data = json.loads(path.read_text())
        for instance in data["Instances"]:
            superni.append(
                {
                    "task": "superni",
                    "split": "train",
                    "instance_id": instance["id"],
                    "instruction": data["Definition"][0],
                    "input": instance["input"],
                    "output": list(instance["output"]),
                }
            )
    long = pd.DataFrame(superni)
    copies = max(1, len(rows) // (10 * len(long)))
    long = pd.concat([long.assign(instance_id=long["instance_id"] + f"-{k}") for k in range(copies)], ignore_index=True)
    rows = pd.concat([rows.drop(columns="index"), long], ignore_index=True)
    return rows.assign(
        instruction_id=rows["task"], source="benchmark", source_task=rows["task"], source_file="benchmark"
    )


def make_job(folder: Path, tasks: list[str], mode: str, args, packing: bool):
    from inscl.core.config import validate_config
    from inscl.training.train import TrainJob

    config = validate_config({"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": tasks}})
    training = {
        **config["training"],
        "mode": mode,
        "batch_size": args.batch_size,
        "packing": packing,
        "threads": args.threads,
    }
    name = f"{mode}-{'packed' if packing else 'padded'}"
    return TrainJob(
        str(folder / "instances.parquet"), tasks, str(folder / "base"), str(folder / "base"),
        str(folder / name / "model"), str(folder / name / "log.parquet"), str(folder / name / "checkpoints"),
        training, {"base": "tiny", "trust_remote_code": False}, 0, 2.0, label=name,
    )  # fmt: skip


def optimizer_step(trainer, step: int) -> float:
    """One optimizer step as StageTrainer.train runs it; its wall time."""
    started = time.perf_counter()
    trainer.train_step(step)
    torch.nn.utils.clip_grad_norm_([p for p in trainer.wrapped.parameters() if p.requires_grad], 1.0)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def bare_step(model, batches: list[dict]) -> float:
    """transformers' model alone: forward with its own loss and backward, on ready tensors."""
    started = time.perf_counter()
    for batch in batches:
        model(**batch, use_cache=False).loss.backward()
    elapsed = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return elapsed


def run_one(args) -> dict:
    """Packed, padded and bare, taking turns on the same steps, in this process."""
    from inscl.training import attention, distributed
    from inscl.training.batching import collate, rank_share
    from inscl.training.models import load_trainable
    from inscl.training.train import StageTrainer

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    tasks = sorted(pd.read_parquet(folder / "instances.parquet")["task"].unique())
    packed, padded = (
        StageTrainer(make_job(folder, tasks, args.mode, args, packing), distributed.Ranks())
        for packing in (True, False)
    )
    for trainer in (packed, padded):
        trainer.setup()
    kernel = attention.implementation("sdpa", packed=True)
    bare = load_trainable(str(folder / "base"), str(folder / "base"), packed.job.model, packed.training, "cpu", kernel)
    bare.train()
    cap = packed.training["micro_batch_tokens"]
    rows = []
    for step in range(min(args.warmup + args.steps, len(packed.plan.steps))):
        shares = rank_share(packed.plan.steps[step], packed.lengths, distributed.Ranks(), cap)
        tensors = []
        for indices, _ in shares:
            batch = collate(indices, packed.examples, packed.tokenizer.pad_token_id, True, packed.slack)
            extra = attention.forward_kwargs("sdpa", batch, "cpu")
            tensors.append({k: batch[k] for k in ("input_ids", "labels", "position_ids")} | extra)
        layout = [collate(i, padded.examples, padded.tokenizer.pad_token_id, False) for i, _ in shares]
        times = {"packed": [], "padded": [], "bare": []}
        for name in list(np.roll(["packed", "padded", "bare"], step)) * args.repeats:  # each goes first in turn
            if name == "bare":
                times[name].append(bare_step(bare, tensors))
            else:
                times[name].append(optimizer_step(packed if name == "packed" else padded, step))
        times = {name: min(values) for name, values in times.items()}  # the least disturbed
        if step >= args.warmup:
            rows.append(
                {
                    **times,
                    "real_tokens": int(packed.lengths[packed.plan.steps[step]].sum()),
                    "padded_tokens": sum(int(b["input_ids"].numel()) for b in layout),
                    "micro_batches": len(shares),
                }
            )
    frame = pd.DataFrame(rows)
    limit = frame["padded_tokens"].sum() / frame["real_tokens"].sum()
    ratio = float((frame["padded"] / frame["packed"]).median())
    return {
        "mode": args.mode,
        "steps": len(frame),
        "examples_per_step": args.batch_size,
        "micro_batches_per_step": float(frame["micro_batches"].mean()),
        "tokens_per_step": float(frame["real_tokens"].mean()),
        "packed_tokens_per_s": float(frame["real_tokens"].sum() / frame["packed"].sum()),
        "padded_tokens_per_s": float(frame["real_tokens"].sum() / frame["padded"].sum()),
        "ratio": ratio,
        "limit": float(limit),
        "fraction": ratio / limit,
        "step_over_bare": float((frame["packed"] / frame["bare"]).median()),
        "trainable": packed.trainable_parameters,
        "parameters": packed.total_parameters,
    }


def spawn(args, folder: Path, mode: str) -> dict:
    command = [sys.executable, __file__, "--one", "--folder", str(folder), "--mode", mode]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    command += ["--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps (of two epochs)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each step per layout; the fastest counts")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="examples per optimizer step")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    from inscl.training.base_model import build_base_model

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    tiny = {"seed": 0, **config["model"]["tiny"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = benchmark_rows()
        rows.to_parquet(folder / "instances.parquet")
        build_base_model({"base": "tiny", "trust_remote_code": False, "tiny": tiny}, rows, folder / "base")
        print(
            f"data: {len(rows)} examples (demo tasks + SuperNI excerpts); tiny LLaMA {tiny}; "
            f"{args.batch_size} examples per step, micro-batches of <= 4096 tokens; {args.threads} threads; "
            f"{args.steps} timed steps after {args.warmup}"
        )
        results = [spawn(args, folder, mode) for mode in ("full", "lora")]
    print(
        f"\n{'mode':5} {'tokens/step':>11} {'packed tok/s':>12} {'padded tok/s':>12} {'R':>6} {'L':>6} {'F':>6} {'B':>6}"
    )
    for r in results:
        print(
            f"{r['mode']:5} {r['tokens_per_step']:11.0f} {r['packed_tokens_per_s']:12.0f} {r['padded_tokens_per_s']:12.0f} "
            f"{r['ratio']:6.2f} {r['limit']:6.2f} {r['fraction']:6.2f} {r['step_over_bare']:6.2f}"
        )
    full = results[0]
    print(
        f"packing: packed/padded {full['ratio']:.2f}, limit {full['limit']:.2f}, "
        f"{full['fraction']:.2f} of the limit, step/bare {full['step_over_bare']:.2f}"
    )


if __name__ == "__main__":
    main()
