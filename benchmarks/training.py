"""Training-step throughput: packed rows vs plain padded batches, side by side on the same data.

    .venv/bin/python benchmarks/training.py [--steps 20] [--threads 2]

Data: the demo tasks (short prompts) plus real SuperNI excerpts (long prompts), i.e. the mixed
lengths of real instruction data. Each configuration runs in its own process so its peak memory
is its own. On a CUDA machine it also times a ~1B-parameter LLaMA-shaped model in bf16, full and
LoRA, and prints MFU = 6 x parameters x tokens/s / peak bf16 FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
FIXTURES = ROOT / "tests" / "fixtures" / "training"
# Dense bf16 peak of common accelerators, FLOP/s (vendor datasheets).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "RTX 4090": 165e12}
# A LLaMA-shaped model of about 1.1B parameters (TinyLlama's shape).
ONE_B = {
    "layers": 22,
    "hidden_size": 2048,
    "heads": 32,
    "intermediate_size": 5632,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "seed": 0,
}


def benchmark_rows() -> pd.DataFrame:
    from inscl.data.demo import generate_demo

    rows = pd.DataFrame(generate_demo(0, 240, 1))
    rows = rows[rows["split"] == "train"].assign(instance_id=lambda d: d["task"] + "-" + d["index"].astype(str))
    superni = []
    for path in sorted(FIXTURES.glob("task*.json")):
        data = json.loads(path.read_text())
        for instance in data["Instances"]:
            superni.append(
                {
                    "task": path.stem,
                    "split": "train",
                    "instance_id": instance["id"],
                    "instruction": data["Definition"][0],
                    "input": instance["input"],
                    "output": instance["output"],
                }
            )
    # Repeat the long examples so they are ~10% of the data, as a long tail.
    long = pd.DataFrame(superni)
    long = pd.concat([long] * max(1, len(rows) // (10 * len(long))), ignore_index=True)
    return pd.concat([rows.drop(columns="index"), long], ignore_index=True).assign(answer=lambda d: d["output"].str[0])


def mfu(parameters: int, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: 6 x N FLOPs per trained token (forward + backward) over the peak."""
    return 6 * parameters * tokens_per_s / peak_flops


def peak_bf16_flops(device_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16.items() if key in device_name), None)


def build_model(tiny: dict, rows: pd.DataFrame, folder: Path):
    from inscl.training.base_model import build_base_model

    instances = rows.assign(output=rows["answer"].map(lambda a: [a]))
    build_base_model({"base": "tiny", "trust_remote_code": False, "tiny": tiny}, instances, folder)


def run_one(args) -> dict:
    """One configuration, in this process: returns throughput and memory figures."""
    from inscl.training.batching import collate, plan_training
    from inscl.training.examples import encode_examples
    from inscl.training.loss import AnswerLoss
    from inscl.training.models import autocast_dtype, count_parameters, load_tokenizer, load_trainable

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_cfg = {"base": "tiny", "trust_remote_code": False}
    training = {
        "mode": args.mode,
        "batch_tokens": args.batch_tokens,
        "packing": args.layout == "packed",
        "grad_accum": 1,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    }
    amp = autocast_dtype("auto", device)
    tokenizer = load_tokenizer(args.model, model_cfg)
    model = load_trainable(
        args.model, args.model, model_cfg, training, amp if device.type == "cuda" and amp else torch.float32
    )
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device).train()
    rows = pd.read_parquet(args.rows)
    examples = encode_examples(tokenizer, rows, "plain", 512)
    plan = plan_training(examples, training, 1.0, seed=0)
    loss_fn = AnswerLoss(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    real = padded = 0
    step_rates, cpu_seconds = [], 0.0
    steps = min(args.steps + args.warmup, len(plan.micro_batches))
    for step in range(steps):
        batch = collate(plan, step, examples, tokenizer.pad_token_id)
        inputs = {k: (v.to(device) if v is not None else None) for k, v in batch.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(**inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            tokens = sum(len(examples[i]) for i in plan.example_indices(step))
            step_rates.append(tokens / (time.perf_counter() - start))
            cpu_seconds += time.process_time() - cpu_start
            real += tokens
            padded += batch["input_ids"].numel()
    trainable, total = count_parameters(model)
    # The median step is robust to other processes stealing the CPU for a while.
    tokens_per_s = float(np.median(step_rates))
    result = {
        "layout": args.layout,
        "mode": args.mode,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "steps": steps - args.warmup,
        "tokens_per_s": tokens_per_s,
        "padding_share": 1 - real / padded,
        "cpu_tokens_per_s": real / cpu_seconds,
        "examples_per_s": tokens_per_s * len(examples) / sum(map(len, examples)),
        "parameters": total,
        "trainable": trainable,
    }
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak = peak_bf16_flops(result["device"])
        result["mfu"] = mfu(total, result["tokens_per_s"], peak) if peak else None
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["training_memory_mb"] = result["peak_memory_mb"] - rss_before
    return result


def spawn(args, model: Path, rows: Path, layout: str, mode: str, steps: int, batch_tokens: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--one",
        "--model",
        str(model),
        "--rows",
        str(rows),
        "--layout",
        layout,
        "--mode",
        mode,
        "--steps",
        str(steps),
        "--threads",
        str(args.threads),
        "--batch-tokens",
        str(batch_tokens),
        "--warmup",
        str(args.warmup),
    ]
    if args.gradient_checkpointing:
        command.append("--gradient-checkpointing")
    out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    header = (
        f"{'layout':8} {'mode':5} {'tokens/s':>10} {'tok/CPU-s':>10} {'examples/s':>10} {'padding':>8} "
        f"{'peak MB':>9} {'train MB':>9} {'MFU':>7}"
    )
    print(header)
    for r in results:
        mfu_text = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        train_mb = f"{r['training_memory_mb']:9.0f}" if "training_memory_mb" in r else f"{'-':>9}"
        print(
            f"{r['layout']:8} {r['mode']:5} {r['tokens_per_s']:10.0f} {r['cpu_tokens_per_s']:10.0f} "
            f"{r['examples_per_s']:10.1f} {100 * r['padding_share']:7.1f}% {r['peak_memory_mb']:9.0f} {train_mb} {mfu_text:>7}"
        )
    by = {(r["layout"], r["mode"]): r for r in results}
    for mode in ("full", "lora"):
        if ("packed", mode) in by and ("padded", mode) in by:
            speedup = by[("packed", mode)]["tokens_per_s"] / by[("padded", mode)]["tokens_per_s"]
            print(f"{mode}: packed / padded tokens/s = {speedup:.2f}x (median step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-tokens", type=int, default=None, help="default: training.batch_tokens of config.yaml")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--layout", choices=["packed", "padded"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    tiny = {"seed": 0, **config["model"]["tiny"]}
    batch_tokens = args.batch_tokens or config.get("training", {}).get("batch_tokens", 4096)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = benchmark_rows()
        rows.to_parquet(tmp / "rows.parquet")
        build_model(tiny, rows, tmp / "tiny")
        lengths = rows.shape[0]
        print(
            f"data: {lengths} examples (demo tasks + SuperNI excerpts); tiny model {tiny}; batch_tokens {batch_tokens}; "
            f"threads {args.threads}"
        )
        results = [
            spawn(args, tmp / "tiny", tmp / "rows.parquet", layout, mode, args.steps, batch_tokens)
            for mode in ("full", "lora")
            for layout in ("packed", "padded")
        ]
        print_table(
            "CPU, tiny LLaMA (fp32)" if results[0]["device"] == "cpu" else f"{results[0]['device']}, tiny LLaMA",
            results,
        )
        if torch.cuda.is_available():
            build_model(ONE_B, rows, tmp / "one_b")
            big = [
                spawn(args, tmp / "one_b", tmp / "rows.parquet", layout, mode, args.steps, 16384)
                for mode in ("full", "lora")
                for layout in ("packed", "padded")
            ]
            print_table(f"{big[0]['device']}, ~1B LLaMA (bf16 autocast), batch_tokens 16384", big)
        else:
            print("\nno CUDA device: the ~1B-parameter MFU measurement runs only on a GPU")


if __name__ == "__main__":
    main()
