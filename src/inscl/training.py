"""Continual fine-tuning of one stage: answer-only examples, packing, the loop, checkpoints and resume.

The training of a stage is a pure function of its inputs: the example order, the batches and
every random draw derive from the job's seed, so a run killed and resumed from a checkpoint ends
with the same weights as an uninterrupted one (on the CPU).
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import re
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from .io import InputError, atomic_dir, content_hash, stable_seed, write_parquet
from .modeling import has_tokenizer, is_adapter, load_causal_lm, load_tokenizer, resolve_model_path
from .prompts import build_prompt

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOG_COLUMNS = ["step", "epoch", "loss", "learning_rate", "tokens_per_s", "peak_memory_mb", "elapsed_s"]
# Keys that do not change what a stage computes, so changing them keeps its checkpoints valid.
RESUME_NEUTRAL_KEYS = {"checkpoint_every", "threads", "mem_mb", "runtime"}


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; a checkpoint was saved and a rerun resumes from it."""


@dataclass
class TrainJob:
    """Everything one training job reads and writes (JSON-serialisable for multi-process launch)."""

    instances: str
    tasks: list[str]
    previous: str
    base: str
    output_model: str
    output_log: str
    checkpoints: str
    training: dict
    model: dict
    seed: int
    epochs: float
    replay: str | None = None
    label: str = ""

    def to_json(self, path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def from_json(cls, path) -> "TrainJob":
        return cls(**json.loads(Path(path).read_text()))


# ---------------------------------------------------------------- job parameters


def epochs_for_stage(epochs, position: int | None, n_tasks: int | None) -> float:
    """Epochs of one job: the scalar, or the list entry of the task's position in its order.

    position None (the multitask reference) takes the mean of the list.
    """
    if not isinstance(epochs, (list, tuple)):
        return float(epochs)
    if n_tasks is not None and len(epochs) < n_tasks:
        raise InputError(
            "config", f"{len(epochs)} epoch values for an order of {n_tasks} tasks", field="training.epochs"
        )
    if position is None:
        return float(np.mean(epochs))
    return float(epochs[position])


def run_seed(wildcards: dict) -> int:
    """Training seed of a job from its wildcards: (seed, order, method, stage) for a chain stage,
    (seed, 'multitask') and (seed, 'single_task', task) for the references."""
    seed = int(wildcards["seed"])
    if "stage" in wildcards:
        return stable_seed(seed, wildcards["order"], wildcards["method"], int(wildcards["stage"]))
    if "task" in wildcards:
        return stable_seed(seed, "single_task", wildcards["task"])
    return stable_seed(seed, "multitask")


# ---------------------------------------------------------------- data


def replay_file(replay_dir, stage: int) -> str | None:
    """The replay set of a chain stage, `<replay_dir>/stage{k}.parquet`; stage 1 may have none."""
    path = Path(replay_dir) / f"stage{stage}.parquet"
    if path.exists():
        return str(path)
    if stage == 1:
        return None
    raise InputError(path, f"replay set of stage {stage} is missing")


def load_training_rows(instances_path, tasks: list[str], replay_path=None) -> pd.DataFrame:
    """Training rows of `tasks` plus the replayed rows: instruction, input, answer (first reference)."""
    instances = pd.read_parquet(instances_path, columns=["task", "split", "instance_id", "instruction", "input", "output"])
    train = instances[(instances["split"] == "train") & instances["task"].isin(tasks)]
    for task in tasks:
        if not (train["task"] == task).any():
            raise InputError(instances_path, f"no training examples for task {task!r}", field="task")
    frames = [train.assign(replayed=False)]
    if replay_path is not None:
        replay = pd.read_parquet(replay_path)
        missing = [c for c in ("task", "instance_id", "instruction", "input", "output") if c not in replay.columns]
        if missing:
            raise InputError(replay_path, "missing column", field=missing[0])
        frames.append(replay[["task", "instance_id", "instruction", "input", "output"]].assign(replayed=True))
    rows = pd.concat(frames, ignore_index=True)
    answers = []
    for position, (instance_id, refs) in enumerate(zip(rows["instance_id"], rows["output"])):
        if refs is None or len(refs) == 0 or not isinstance(refs[0], str):
            source = replay_path if rows["replayed"].iat[position] else instances_path
            raise InputError(source, "no reference answer", record=instance_id, field="output")
        answers.append(refs[0])
    rows["answer"] = answers
    rows["instruction"] = rows["instruction"].fillna("").astype(str)
    rows["input"] = rows["input"].fillna("").astype(str)
    return rows[["task", "instance_id", "instruction", "input", "answer", "replayed"]]


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def assemble(prompt_ids: list[int], answer_ids: list[int], eos_id: int, max_length: int, bos_id=None) -> Example:
    """Prompt + answer + EOS with loss on the answer and EOS only.

    Too long: the prompt loses tokens from its left (after BOS); an answer that alone does not
    fit is cut on the right, keeping one prompt token.
    """
    target = list(answer_ids) + [eos_id]
    target = target[: max_length - 1]
    room = max_length - len(target)
    if len(prompt_ids) > room:
        keep_bos = bos_id is not None and prompt_ids[0] == bos_id and room >= 2
        prompt_ids = (prompt_ids[:1] + prompt_ids[len(prompt_ids) - room + 1 :]) if keep_bos else prompt_ids[-room:]
    return Example(list(prompt_ids) + target, [IGNORE_INDEX] * len(prompt_ids) + target)


def encode_examples(tokenizer, rows: pd.DataFrame, template: str, max_length: int) -> list[Example]:
    """Tokenise training rows (batched) into answer-only-labelled examples."""
    if tokenizer.eos_token_id is None:
        raise InputError(getattr(tokenizer, "name_or_path", "tokenizer"), "the tokenizer has no EOS token")
    prompts = [build_prompt(i, x, template, tokenizer) for i, x in zip(rows["instruction"], rows["input"])]
    bos = tokenizer.bos_token
    with_bos = [not (bos and p.startswith(bos)) for p in prompts]
    prompt_ids: list[list[int] | None] = [None] * len(prompts)
    for add_special in (True, False):
        chosen = [k for k, flag in enumerate(with_bos) if flag == add_special]
        if chosen:
            encoded = tokenizer([prompts[k] for k in chosen], add_special_tokens=add_special)["input_ids"]
            for k, ids in zip(chosen, encoded):
                prompt_ids[k] = ids
    answer_ids = tokenizer(rows["answer"].tolist(), add_special_tokens=False)["input_ids"]
    return [
        assemble(p, a, tokenizer.eos_token_id, max_length, tokenizer.bos_token_id)
        for p, a in zip(prompt_ids, answer_ids)
    ]


def encode_example(tokenizer, instruction: str, input: str, answer: str, template: str = "plain", max_length: int = 512):
    """One example as training sees it (see encode_examples)."""
    rows = pd.DataFrame({"instruction": [instruction], "input": [input], "answer": [answer]})
    return encode_examples(tokenizer, rows, template, max_length)[0]


# ---------------------------------------------------------------- batching


def pack_rows(lengths, row_length: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of examples into rows of at most `row_length` tokens."""
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > row_length:
        raise ValueError(f"an example of {lengths.max()} tokens does not fit a row of {row_length}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, row index), sorted
    for index in np.argsort(-lengths, kind="stable"):
        length = int(lengths[index])
        slot = bisect.bisect_left(free, (length, -1))
        if slot == len(free):
            rows.append([int(index)])
            remaining, row = row_length - length, len(rows) - 1
        else:
            capacity, row = free.pop(slot)
            rows[row].append(int(index))
            remaining = capacity - length
        if remaining > 0:
            bisect.insort(free, (remaining, row))
    return rows


def collate_packed(rows: list[list[int]], examples: list[Example], pad_id: int) -> dict:
    """Rows of packed examples. Position ids restart at 0 for every example (and for the padding
    tail), which makes transformers build a block-diagonal causal mask (SDPA) or use the varlen
    kernel (flash attention): no token attends across examples."""
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            n = len(examples[i])
            input_ids[r, offset : offset + n] = torch.tensor(examples[i].input_ids)
            labels[r, offset : offset + n] = torch.tensor(examples[i].labels)
            position_ids[r, offset : offset + n] = torch.arange(n)
            offset += n
        position_ids[r, offset:] = torch.arange(width - offset)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": None}


def collate_padded(indices: list[int], examples: list[Example], pad_id: int) -> dict:
    """A plain right-padded batch, one example per row (the unpacked baseline)."""
    width = max(len(examples[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for r, i in enumerate(indices):
        n = len(examples[i])
        input_ids[r, :n] = torch.tensor(examples[i].input_ids)
        labels[r, :n] = torch.tensor(examples[i].labels)
        attention_mask[r, :n] = 1
    position_ids = torch.arange(width).expand(len(indices), width)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "attention_mask": attention_mask}


@dataclass
class Plan:
    """Every micro-batch of a job, in order, and which ones make up each optimizer step."""

    packed: bool
    micro_batches: list  # packed: list of rows (lists of example indices); padded: list of example indices
    steps: list[range]
    batches_per_epoch: int
    row_length: int
    step_targets: list[int] = field(default_factory=list)

    def epoch_of(self, micro_batch: int) -> float:
        return micro_batch / self.batches_per_epoch

    def example_indices(self, micro_batch: int) -> list[int]:
        batch = self.micro_batches[micro_batch]
        return [i for row in batch for i in row] if self.packed else list(batch)


def plan_training(examples: list[Example], training: dict, epochs: float, seed: int, world_size: int = 1) -> Plan:
    """Deterministic batches for the whole job.

    Packed: rows as long as the longest example (rounded up to 8) are filled best-fit-decreasing
    once, `batch_tokens // row_length` rows make a micro-batch, and the rows are reshuffled each
    epoch. Padded: examples are shuffled each epoch and cut into batches holding about
    `batch_tokens` real tokens. An optimizer step takes `grad_accum x world_size` micro-batches.
    """
    if not examples:
        raise ValueError("no training examples")
    lengths = np.array([len(e) for e in examples])
    batch_tokens = int(training["batch_tokens"])
    packed = bool(training.get("packing", True))
    row_length = int(math.ceil(lengths.max() / 8) * 8)
    if packed:
        rows = pack_rows(lengths, row_length)
        per_batch = max(1, batch_tokens // row_length)
        units = rows
    else:
        per_batch = max(1, round(batch_tokens / lengths.mean()))
        units = list(range(len(examples)))
    batches_per_epoch = math.ceil(len(units) / per_batch)
    total = max(1, round(epochs * batches_per_epoch))
    micro_batches: list = []
    epoch = 0
    while len(micro_batches) < total:
        order = np.random.default_rng(stable_seed(seed, "epoch", epoch)).permutation(len(units))
        shuffled = [units[k] for k in order]
        micro_batches += [shuffled[k : k + per_batch] for k in range(0, len(shuffled), per_batch)]
        epoch += 1
    micro_batches = micro_batches[:total]
    group = int(training.get("grad_accum", 1)) * world_size
    steps = [range(k, min(k + group, total)) for k in range(0, total, group)]
    plan = Plan(packed, micro_batches, steps, batches_per_epoch, row_length)
    target_counts = np.array([sum(1 for t in e.labels if t != IGNORE_INDEX) for e in examples])
    plan.step_targets = [
        int(sum(target_counts[plan.example_indices(m)].sum() for m in step)) for step in steps
    ]
    return plan


def collate(plan: Plan, micro_batch: int, examples: list[Example], pad_id: int) -> dict:
    batch = plan.micro_batches[micro_batch]
    return collate_packed(batch, examples, pad_id) if plan.packed else collate_padded(batch, examples, pad_id)


def rank_share(step: range, ranks: distributed.Ranks) -> list[tuple[int, float]]:
    """(micro-batch, weight) pairs this rank runs in a step. Every rank runs the same number of
    passes (as DDP needs); a rank short of data repeats one with weight 0."""
    mine = list(step)[ranks.rank :: ranks.world_size]
    passes = math.ceil(len(step) / ranks.world_size)
    return [(m, 1.0) for m in mine] + [(step[0], 0.0)] * (passes - len(mine))


# ---------------------------------------------------------------- schedule


def learning_rate_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then constant or cosine to 0."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


# ---------------------------------------------------------------- model


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it helps ('auto': CUDA with bf16), or as asked; None = fp32."""
    if precision == "fp32":
        return None
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "bf16":
        if device.type == "cuda" and not cuda_bf16:
            raise RuntimeError("training.precision is bf16 but this GPU does not support bf16")
        return torch.bfloat16
    return torch.bfloat16 if cuda_bf16 else None


def lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        task_type="CAUSAL_LM",
    )


def load_trainable(previous: str, base: str, model_cfg: dict, training: dict, frozen_dtype=torch.float32):
    """The model a stage starts from, ready to train.

    full: the previous model's weights (an adapter from a LoRA run is merged first).
    lora: the previous stage's adapter carried on (trainable), or a fresh adapter on a full model.
    """
    if training["mode"] == "full":
        if is_adapter(previous):
            from peft import PeftModel

            return PeftModel.from_pretrained(load_causal_lm(base, model_cfg), previous).merge_and_unload()
        return load_causal_lm(previous, model_cfg)
    from peft import PeftModel, get_peft_model

    if is_adapter(previous):
        return PeftModel.from_pretrained(load_causal_lm(base, model_cfg, frozen_dtype), previous, is_trainable=True)
    return get_peft_model(load_causal_lm(previous, model_cfg, frozen_dtype), lora_config(training["lora"]))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def causal_lm(model):
    """The transformers model inside a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class AnswerLoss(torch.nn.Module):
    """Summed cross-entropy over answer tokens. Only positions with a label reach the LM head,
    so prompt tokens cost no vocabulary projection."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, position_ids, attention_mask=None):
        lm = causal_lm(self.model)
        hidden = lm.get_decoder()(
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, targets[keep], reduction="sum")


def wrap_parallel(module: AnswerLoss, ranks: distributed.Ranks, fsdp: bool, device: torch.device):
    """DDP, or FSDP2 (each decoder layer and the root sharded) when asked, across the ranks."""
    if not ranks.distributed:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in causal_lm(module.model).get_decoder().layers:
            fully_shard(layer)
        return fully_shard(module)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- checkpoints


def _state_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def latest_checkpoint(folder) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step(\d+)", p.name))]
    return max(found)[1] if found else None


def save_checkpoint(folder, step: int, wrapped, optimizer, state: dict, log_rows: list, ranks) -> None:
    """Trainable weights (safetensors), optimizer, RNG states, position and log so far; only the
    newest checkpoint is kept. Every rank takes part in gathering; rank 0 writes."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(wrapped, options=_state_options(ignore_frozen_params=True))
    optim_state = get_optimizer_state_dict(wrapped, optimizer, options=_state_options())
    rng = distributed.gather_rng_states(ranks)
    if ranks.is_main:
        folder = Path(folder)
        with atomic_dir(folder / f"step{step:08d}") as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "trainable.safetensors")
            torch.save(optim_state, tmp / "optimizer.pt")
            torch.save(rng, tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
            write_parquet(pd.DataFrame(log_rows, columns=LOG_COLUMNS), tmp / "log.parquet")
        for old in folder.iterdir():
            if old.name.startswith("step") and old.name != f"step{step:08d}":
                shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(ranks)


def load_checkpoint(path: Path, wrapped, optimizer, ranks: distributed.Ranks) -> tuple[dict, list]:
    """Restore a checkpoint in place; returns (state, log rows)."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(wrapped, load_file(path / "trainable.safetensors"), options=options)
    set_optimizer_state_dict(wrapped, optimizer, torch.load(path / "optimizer.pt", weights_only=True), options=options)
    distributed.restore_rng_states(torch.load(path / "rng.pt", weights_only=True), ranks)
    state = json.loads((path / "state.json").read_text())
    rows = pd.read_parquet(path / "log.parquet").to_dict("records")
    return state, rows


def job_fingerprint(job: TrainJob, examples: list[Example], world_size: int) -> str:
    """What a checkpoint is valid for: the tokens, the settings that shape training, the start model."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(np.asarray(example.input_ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(example.labels, dtype=np.int64).tobytes())
    settings = {k: v for k, v in job.training.items() if k not in RESUME_NEUTRAL_KEYS}
    key = [digest.hexdigest(), settings, job.seed, job.epochs, folder_signature(job.previous), world_size]
    return content_hash(json.dumps(key, sort_keys=True, default=str))


def folder_signature(folder) -> list:
    """Name, size and modification time of each file: changes when the start model is rebuilt,
    without reading gigabytes of weights."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


# ---------------------------------------------------------------- the loop


class _StopFlag:
    """Set by SIGTERM (e.g. SLURM preemption); checked after each optimizer step."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint after this step")
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def training_device(ranks: distributed.Ranks) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def train(job: TrainJob, ranks: distributed.Ranks | None = None) -> dict:
    """Train one stage; resume from the newest valid checkpoint in `job.checkpoints`."""
    ranks = ranks or distributed.Ranks()
    training = job.training
    device = training_device(ranks)
    amp_dtype = autocast_dtype(training.get("precision", "auto"), device)
    torch.manual_seed(stable_seed(job.seed, "torch"))

    tokenizer = load_tokenizer(job.previous if has_tokenizer(job.previous) else job.base, job.model)
    rows = load_training_rows(job.instances, job.tasks, job.replay)
    model = load_trainable(
        job.previous, job.base, job.model, training, amp_dtype if device.type == "cuda" and amp_dtype else torch.float32
    )
    max_length = min(int(training["max_length"]), int(causal_lm(model).config.max_position_embeddings))
    examples = encode_examples(tokenizer, rows, training.get("template", "plain"), max_length)
    plan = plan_training(examples, training, job.epochs, job.seed, ranks.world_size)
    trainable, total = count_parameters(model)
    log.info(
        "%s: %d examples (%d replayed), %d steps, %s, %d of %d parameters trainable, device %s",
        job.label, len(examples), int(rows["replayed"].sum()), len(plan.steps),
        "packed" if plan.packed else "padded", trainable, total, device,
    )
    if training.get("gradient_checkpointing"):
        causal_lm(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    causal_lm(model).config.use_cache = False
    model.to(device).train()
    wrapped = wrap_parallel(AnswerLoss(model), ranks, bool(training.get("fsdp")), device)
    torch.manual_seed(stable_seed(job.seed, "dropout", ranks.rank))  # own dropout masks per rank
    decay = [p for p in wrapped.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in wrapped.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": training.get("weight_decay", 0.0)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=training["learning_rate"],
    )

    fingerprint = job_fingerprint(job, examples, ranks.world_size)
    start_step, elapsed_before, log_rows = 0, 0.0, []
    checkpoint = latest_checkpoint(job.checkpoints)
    if checkpoint is not None:
        saved = json.loads((checkpoint / "state.json").read_text())
        if saved.get("fingerprint") == fingerprint:
            state, log_rows = load_checkpoint(checkpoint, wrapped, optimizer, ranks)
            start_step, elapsed_before = state["step"], state["elapsed_s"]
            log.info("resumed from checkpoint %s at step %d of %d", checkpoint, start_step, len(plan.steps))
        else:
            log.warning("checkpoint %s belongs to other inputs or settings; starting afresh", checkpoint)
            if ranks.is_main:
                shutil.rmtree(job.checkpoints, ignore_errors=True)
            distributed.barrier(ranks)

    pad_id = tokenizer.pad_token_id
    total_steps = len(plan.steps)
    max_grad_norm = training.get("max_grad_norm", 1.0)
    started = time.perf_counter()
    progress = tqdm(
        total=total_steps, initial=start_step, desc=job.label or "train", disable=not ranks.is_main,
        file=sys.stderr, dynamic_ncols=True,
    )
    with _StopFlag() as stop:
        for step in range(start_step, total_steps):
            step_start = time.perf_counter()
            lr = learning_rate_at(step, total_steps, training["learning_rate"], training["schedule"], training["warmup_ratio"])
            for group in optimizer.param_groups:
                group["lr"] = lr
            share = rank_share(plan.steps[step], ranks)
            loss_sum = torch.zeros((), dtype=torch.float64)
            tokens = 0
            for position, (micro_batch, weight) in enumerate(share):
                batch = collate(plan, micro_batch, examples, pad_id)
                inputs = {k: (v.to(device) if v is not None else None) for k, v in batch.items()}
                sync = position == len(share) - 1 or not hasattr(wrapped, "no_sync")
                context = wrapped.no_sync() if not sync else contextlib.nullcontext()
                with context, torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    summed = wrapped(**inputs)
                    # DDP/FSDP average gradients over ranks; scaling by world size makes it a sum.
                    loss = summed * (weight * ranks.world_size / plan.step_targets[step])
                loss.backward()
                loss_sum += summed.detach().double().cpu() * weight
                tokens += sum(len(examples[i]) for i in plan.example_indices(micro_batch)) * int(weight)
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, tokens = _sum_over_ranks(loss_sum, tokens, ranks)
            now = time.perf_counter()
            log_rows.append({
                "step": step + 1,
                "epoch": plan.epoch_of(plan.steps[step][-1] + 1),
                "loss": loss_sum / plan.step_targets[step],
                "learning_rate": lr,
                "tokens_per_s": tokens / max(now - step_start, 1e-9),
                "peak_memory_mb": peak_memory_mb(device),
                "elapsed_s": elapsed_before + now - started,
            })
            progress.update(1)
            progress.set_postfix(loss=f"{log_rows[-1]['loss']:.4f}")
            interrupted = distributed.any_rank(stop.requested, ranks)
            if interrupted or ((step + 1) % training["checkpoint_every"] == 0 and step + 1 < total_steps):
                state = {"fingerprint": fingerprint, "elapsed_s": log_rows[-1]["elapsed_s"]}
                save_checkpoint(job.checkpoints, step + 1, wrapped, optimizer, state, log_rows, ranks)
            if interrupted:
                progress.close()
                raise TrainingInterrupted(f"{job.label}: interrupted at step {step + 1}; rerun to resume")
    progress.close()

    save_final(job, model, wrapped, tokenizer, ranks)
    if ranks.is_main:
        write_parquet(pd.DataFrame(log_rows, columns=LOG_COLUMNS), job.output_log)
        shutil.rmtree(job.checkpoints, ignore_errors=True)
    distributed.barrier(ranks)
    return {
        "start_step": start_step,
        "steps_run": total_steps - start_step,
        "total_steps": total_steps,
        "final_loss": log_rows[-1]["loss"] if log_rows else None,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }


def _sum_over_ranks(loss_sum: torch.Tensor, tokens: int, ranks: distributed.Ranks) -> tuple[float, int]:
    if not ranks.distributed:
        return float(loss_sum), tokens
    import torch.distributed as dist

    device = torch.device("cuda", ranks.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    values = torch.tensor([float(loss_sum), float(tokens)], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return float(values[0]), int(values[1])


def save_final(job: TrainJob, model, wrapped, tokenizer, ranks: distributed.Ranks) -> None:
    """save_pretrained the result: full weights, or the adapter (merged into full weights when
    lora.merge_after_stage). Sharded (FSDP) weights are gathered into a CPU copy first."""
    if ranks.distributed and job.training.get("fsdp"):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        weights = get_model_state_dict(wrapped, options=_state_options())
        if not ranks.is_main:
            distributed.barrier(ranks)
            return
        model = load_trainable(job.previous, job.base, job.model, job.training)
        model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items()}, strict=False)
    if ranks.is_main:
        model = model.to("cpu")
        lora = job.training["mode"] == "lora"
        if lora and job.training["lora"]["merge_after_stage"]:
            model = model.merge_and_unload()
            lora = False
        if lora:
            model.peft_config["default"].base_model_name_or_path = resolve_model_path(job.base)
        with atomic_dir(job.output_model) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    distributed.barrier(ranks)


def run_job(job: TrainJob) -> dict | None:
    """Train in this process, or launch one process per GPU when the job has several."""
    nproc = distributed.process_count(int(job.training.get("gpus", 0)))
    if nproc > 1:
        spec = Path(job.checkpoints) / "launch_spec.json"
        job.to_json(spec)
        distributed.launch(str(spec), nproc)
        return None
    return train(job)


def main(argv=None) -> int:
    """`python -m inscl.training --spec job.json`: one training process (torchrun starts N)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--spec", required=True, help="TrainJob JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job = TrainJob.from_json(args.spec)
    torch.set_num_threads(args.threads or int(job.training.get("threads", 1)))
    ranks = distributed.init_from_env()
    try:
        summary = train(job, ranks)
    except TrainingInterrupted as error:
        log.error("%s", error)
        return 143
    finally:
        distributed.shutdown(ranks)
    if ranks.is_main:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
