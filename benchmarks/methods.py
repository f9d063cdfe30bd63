"""What each continual-learning method costs per optimizer step against sequential fine-tuning, on this machine.

    .venv/bin/python benchmarks/methods.py [--steps 10] [--threads 2] [--batch-size 16] [--size 60m|tiny]

Stage 2 of a chain (the demo's `addition` after `sentiment`), where every method is active: EWC has
stage 1's Fisher, LwF stage 1's model as teacher, A-GEM a memory of 48 `sentiment` examples, O-LoRA
stage 1's adapter. Each method runs in its own process (so that its peak memory is its own) and times
`--steps` optimizer steps as StageTrainer.train runs them (forward and backward of the micro-batches with
the method's loss term, its penalty's gradient, its gradient constraint, clipping, the update) after
`--warmup` steps. Methods:

- seqft: sequential full fine-tuning (the reference of ewc, lwf and agem);
- ewc, lwf, agem (`--memory-batch` examples per reference gradient);
- seqft_lora: sequential LoRA with O-LoRA's adapter (r 8, alpha 32, q/v), the reference of olora;
- olora: a new adapter beside stage 1's, with the orthogonality loss.

Per method: median seconds per step, x its reference, peak resident memory of the process (MB) and the
increase over its reference. EWC's Fisher after the stage (one gradient per example) is timed too,
per example. The model is `--size` 60m (8 layers, hidden 768: about 60M parameters) or the demo's tiny
LLaMA. The last line reads

    methods: seconds per step x SeqFT: ewc E, lwf L, agem A; olora O x SeqLoRA
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SIZES = {
    "60m": {"layers": 8, "hidden_size": 768, "heads": 12, "intermediate_size": 2048, "vocab_size": 1024},
    "tiny": {"layers": 2, "hidden_size": 128, "heads": 4, "intermediate_size": 256, "vocab_size": 1024},
}
METHODS = ["seqft", "ewc", "lwf", "agem", "seqft_lora", "olora"]
REFERENCE = {"ewc": "seqft", "lwf": "seqft", "agem": "seqft", "olora": "seqft_lora"}
FIRST, SECOND = "sentiment", "addition"


def settings(args) -> tuple[dict, dict]:
    """(training settings, every method's settings) from the schema's defaults."""
    from inscl.core.config import validate_config

    config = validate_config({"data": {"sources": [{"name": "d", "type": "demo"}]}, "orders": {"o": [FIRST, SECOND]}})
    training = {
        **config["training"],
        "mode": "full",
        "batch_size": args.batch_size,
        "learning_rate": 5e-4,
        "threads": args.threads,
        "checkpoint_every": 10**6,
    }
    methods = {name: config[name] for name in ("ewc", "lwf", "agem", "olora")}
    methods["agem"] = {**methods["agem"], "memory_batch": args.memory_batch}
    methods["ewc"] = {**methods["ewc"], "fisher_examples": args.fisher_examples}
    return training, methods


def make_job(folder: Path, name: str, task: str, previous: Path, training: dict, model: dict, epochs: float, **extra):
    from inscl.training.train import TrainJob

    return TrainJob(
        str(folder / "instances.parquet"), [task], str(previous), str(folder / "base"),
        str(folder / name / "model"), str(folder / name / "log.parquet"), str(folder / name / "checkpoints"),
        training, model, 0, epochs, label=name, **extra,
    )  # fmt: skip


def stage_two_job(folder: Path, method: str, args, model: dict):
    """The stage-2 job of `method`, from what stage 1 left."""
    training, methods = settings(args)
    if method == "seqft_lora":
        lora = methods["olora"]
        training = {
            **training,
            "mode": "lora",
            "lora": {**training["lora"], **{k: lora[k] for k in ("r", "alpha", "dropout", "target_modules")}},
        }
        return make_job(folder, method, SECOND, folder / "base", training, model, 1.0)
    if method == "olora":
        return make_job(
            folder,
            method,
            SECOND,
            folder / "olora1" / "model",
            training,
            model,
            1.0,
            method="olora",
            method_settings=methods,
        )
    extra = {"method": method, "method_settings": methods} if method != "seqft" else {}
    if method == "ewc":
        extra["previous_state"] = str(folder / "ewc1" / "state.safetensors")
    if method == "agem":
        extra["replay"] = str(folder / "memory.parquet")
    return make_job(folder, method, SECOND, folder / "ewc1" / "model", training, model, 1.0, **extra)  # fmt: skip


def timed_step(trainer, step: int) -> float:
    """One optimizer step as StageTrainer.train runs it; its wall time."""
    started = time.perf_counter()
    trainer.train_step(step)
    trainer.add_penalty()
    trainer.method.after_backward(trainer, step)
    torch.nn.utils.clip_grad_norm_([p for p in trainer.wrapped.parameters() if p.requires_grad], 1.0)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def run_one(args) -> dict:
    from inscl.training import distributed
    from inscl.training.train import StageTrainer

    torch.set_num_threads(args.threads)
    folder = Path(args.folder)
    model = json.loads((folder / "model.json").read_text())
    trainer = StageTrainer(stage_two_job(folder, args.method, args, model), distributed.Ranks())
    trainer.setup()
    trainer.resume()
    steps = min(args.warmup + args.steps, len(trainer.plan.steps))
    times = [timed_step(trainer, step) for step in range(steps)][args.warmup :]
    result = {
        "method": args.method,
        "steps": len(times),
        "s_per_step": float(np.median(times)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable": trainer.trainable_parameters,
    }
    if args.method == "ewc":
        started = time.perf_counter()
        trainer.method.empirical_fisher(trainer)
        result["fisher_s_per_example"] = (time.perf_counter() - started) / args.fisher_examples
    return result


def prepare(folder: Path, args) -> dict:
    """Instances, the base model, stage 1 (full with its EWC Fisher; O-LoRA's adapter) and A-GEM's memory."""
    from inscl.data.demo import generate_demo
    from inscl.training.base_model import build_base_model
    from inscl.training.train import train

    rows = pd.DataFrame(generate_demo(0, 240, 1))
    rows = rows.assign(instance_id=rows["task"] + "-" + rows["index"].astype(str)).drop(columns="index")
    rows = rows.assign(instruction_id=rows["task"], source="benchmark", source_task=rows["task"], source_file="b")
    rows.to_parquet(folder / "instances.parquet")
    rows[(rows["task"] == FIRST) & (rows["split"] == "train")].head(48).to_parquet(folder / "memory.parquet")
    model = {
        "base": "tiny",
        "trust_remote_code": False,
        "tiny": {**SIZES[args.size], "max_position_embeddings": 256, "seed": 0},
    }
    (folder / "model.json").write_text(json.dumps(model))
    build_base_model(model, rows, folder / "base")
    training, methods = settings(args)
    short = {**methods, "ewc": {**methods["ewc"], "fisher_examples": 16}}
    torch.set_num_threads(args.threads)
    for name, method in (("ewc1", "ewc"), ("olora1", "olora")):
        state = {"output_state": str(folder / name / "state.safetensors")} if method == "ewc" else {}
        train(make_job(folder, name, FIRST, folder / "base", training, model, 0.25, method=method, method_settings=short, **state))  # fmt: skip
    return model


def spawn(args, folder: Path, method: str) -> dict:
    command = [sys.executable, __file__, "--one", "--folder", str(folder), "--method", method]
    for flag in ("steps", "warmup", "threads", "batch_size", "memory_batch", "fisher_examples", "size"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="examples per optimizer step")
    parser.add_argument("--memory-batch", type=int, default=16, help="A-GEM's examples per reference gradient")
    parser.add_argument("--fisher-examples", type=int, default=32, help="examples of the timed EWC Fisher")
    parser.add_argument("--size", choices=sorted(SIZES), default="60m")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args)
        print(
            f"model {args.size} {SIZES[args.size]}; stage 2 ({SECOND} after {FIRST}), {args.batch_size} examples per "
            f"step, {args.threads} threads; {args.steps} timed steps after {args.warmup}; "
            f"A-GEM memory batch {args.memory_batch}"
        )
        results = {method: spawn(args, folder, method) for method in METHODS}
    print(f"\n{'method':11} {'trainable':>11} {'s/step':>8} {'x ref':>6} {'peak MB':>8} {'+MB vs ref':>10}")
    for method, r in results.items():
        ref = results.get(REFERENCE.get(method, method))
        print(
            f"{method:11} {r['trainable']:11d} {r['s_per_step']:8.3f} {r['s_per_step'] / ref['s_per_step']:6.2f} "
            f"{r['peak_rss_mb']:8.0f} {r['peak_rss_mb'] - ref['peak_rss_mb']:10.0f}"
        )
    print(f"ewc Fisher after the stage: {results['ewc']['fisher_s_per_example']:.3f} s per example")
    ratio = {m: results[m]["s_per_step"] / results[REFERENCE[m]]["s_per_step"] for m in REFERENCE}
    print(
        f"methods: seconds per step x SeqFT: ewc {ratio['ewc']:.2f}, lwf {ratio['lwf']:.2f}, "
        f"agem {ratio['agem']:.2f}; olora {ratio['olora']:.2f} x SeqLoRA"
    )


if __name__ == "__main__":
    main()
