"""Resumable checkpoints of a stage: what they hold, which job they are valid for, and the SIGTERM
flag that makes a preempted job save one before it stops."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from inscl.core import artifacts
from inscl.core.hashing import content_hash
from inscl.core.io import atomic_dir
from inscl.training import distributed
from inscl.training.examples import Example

if TYPE_CHECKING:
    from inscl.training.train import TrainJob

log = logging.getLogger(__name__)

# Keys that do not change what a stage computes, so changing them keeps its checkpoints valid.
RESUME_NEUTRAL_KEYS = {"checkpoint_every", "threads", "mem_mb", "runtime"}


def full_state_options(**kwargs):
    """Unsharded state dicts on the CPU (FSDP gathers them from every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def latest_checkpoint(folder) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step(\d+)", p.name))]
    return max(found)[1] if found else None


def checkpoint_fingerprint(path: Path) -> str | None:
    """The job fingerprint a checkpoint was saved with."""
    return json.loads((path / "state.json").read_text()).get("fingerprint")


def save_checkpoint(folder, step: int, wrapped, optimizer, state: dict, train_log: pd.DataFrame, ranks) -> None:
    """Trainable weights (safetensors), optimizer, RNG states, position and log so far; only the
    newest checkpoint is kept. Every rank takes part in gathering; rank 0 writes."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    weights = get_model_state_dict(wrapped, options=full_state_options(ignore_frozen_params=True))
    optim_state = get_optimizer_state_dict(wrapped, optimizer, options=full_state_options())
    rng = distributed.gather_rng_states(ranks)
    if ranks.is_main:
        folder = Path(folder)
        with atomic_dir(folder / f"step{step:08d}") as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "trainable.safetensors")
            torch.save(optim_state, tmp / "optimizer.pt")
            torch.save(rng, tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
            artifacts.write(train_log, "train_log", tmp / "log.parquet")
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


class StopOnSigterm:
    """Records a SIGTERM (e.g. SLURM preemption) instead of dying; the loop checks `requested`
    after each optimizer step, saves a checkpoint and stops."""

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
