"""Resumable checkpoints of a stage: sharded (each rank writes and reads only its own shard of the
weights and optimizer state, torch.distributed.checkpoint), which job they are valid for, the
optimizer state a chain carries from stage to stage, and the SIGTERM flag that makes a
preempted job save one before it stops.

A checkpoint folder `step{N}` holds the DCP shards and `.metadata`, every rank's RNG state, the
position and the log so far. It is written as `step{N}.partial` and renamed once complete;
only the newest is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
from inscl.core.stages import runtime_keys
from inscl.training import distributed
from inscl.training.examples import Example

if TYPE_CHECKING:
    from inscl.training.train import TrainJob

log = logging.getLogger(__name__)


def resume_neutral_keys() -> set[str]:
    """Training settings that do not change what a stage computes (the schema's x-runtime keys)."""
    return {key.removeprefix("training.") for key in runtime_keys() if key.startswith("training.")}


def latest_checkpoint(folder) -> Path | None:
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"step(\d+)", p.name))]
    return max(found)[1] if found else None


def checkpoint_fingerprint(path: Path) -> str | None:
    """The job fingerprint a checkpoint was saved with."""
    return json.loads((path / "state.json").read_text()).get("fingerprint")


def training_state(wrapped, optimizer) -> dict:
    """This rank's shard of the trainable weights and of the optimizer state (views, no copies)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    model = get_model_state_dict(wrapped, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": model, "optimizer": get_optimizer_state_dict(wrapped, optimizer)}


def write_sharded(folder, state: dict, ranks: distributed.Ranks, extra=None) -> None:
    """Every rank writes its shards of `state` into `folder`.partial; rank 0 adds `extra(tmp)`'s
    files and renames the folder once all shards are in."""
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    if ranks.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    distributed.barrier(ranks)
    dcp.save(state, checkpoint_id=partial)  # returns on every rank once rank 0 has written .metadata
    if ranks.is_main:
        if extra is not None:
            extra(partial)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)


def save_checkpoint(folder, step: int, wrapped, optimizer, state: dict, train_log: pd.DataFrame, ranks) -> None:
    """Trainable weights, optimizer, RNG states, position and log so far, after `step` optimizer steps."""
    rng = distributed.gather_rng_states(ranks)

    def extra(tmp: Path) -> None:
        torch.save(rng, tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        artifacts.write(train_log, "train_log", tmp / "log.parquet")

    target = Path(folder) / f"step{step:08d}"
    write_sharded(target, training_state(wrapped, optimizer), ranks, extra)
    if ranks.is_main:
        for old in Path(folder).iterdir():
            if old.name.startswith("step") and old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)


def read_sharded(folder, state: dict) -> None:
    """Fill `state` (this rank's shards) from `folder`."""
    import torch.distributed.checkpoint as dcp

    dcp.load(state, checkpoint_id=Path(folder))


def load_checkpoint(path: Path, wrapped, optimizer, ranks: distributed.Ranks) -> tuple[dict, list]:
    """Restore a checkpoint in place; returns (state, log rows)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = training_state(wrapped, optimizer)
    read_sharded(path, state)
    set_model_state_dict(wrapped, state["model"], options=StateDictOptions(strict=False))
    load_optimizer_state(wrapped, optimizer, state["optimizer"])
    distributed.restore_rng_states(torch.load(path / "rng.pt", weights_only=True), ranks)
    position = json.loads((path / "state.json").read_text())
    return position, pd.read_parquet(path / "log.parquet").to_dict("records")


def load_optimizer_state(wrapped, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(wrapped, optimizer, state)


def save_optimizer(folder, wrapped, optimizer, ranks) -> None:
    """The optimizer state a chain's next stage starts from (training.optimizer.state: carry)."""
    write_sharded(folder, {"optimizer": training_state(wrapped, optimizer)["optimizer"]}, ranks)


def carry_optimizer(folder, wrapped, optimizer) -> None:
    """Start from the previous stage's optimizer state (moments and step count)."""
    state = {"optimizer": training_state(wrapped, optimizer)["optimizer"]}
    read_sharded(folder, state)
    load_optimizer_state(wrapped, optimizer, state["optimizer"])


def job_fingerprint(job: TrainJob, examples: list[Example], ranks: distributed.Ranks) -> str:
    """What a checkpoint is valid for: the tokens, the settings that shape training, the start model
    (and optimizer state), and the process layout its shards and RNG states belong to."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(np.asarray(example.input_ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(example.labels, dtype=np.int64).tobytes())
    neutral = resume_neutral_keys()
    settings = {k: v for k, v in job.training.items() if k not in neutral}
    starts = [folder_signature(p) for p in (job.previous, job.previous_optimizer) if p]
    # The method, its settings and what it reads besides the rows (its previous state, its memory).
    method = [job.method, job.method_settings] + [file_signature(p) for p in (job.previous_state, job.replay) if p]
    layout = [ranks.world_size, bool(job.training["fsdp"])]
    key = [digest.hexdigest(), settings, job.seed, job.epochs, starts, method, layout]
    return content_hash(json.dumps(key, sort_keys=True, default=str))


def folder_signature(folder) -> list:
    """Name, size and modification time of each file: changes when the start model is rebuilt,
    without reading gigabytes of weights."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    return [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def file_signature(path) -> list:
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


class StopOnSigterm:
    """Records a SIGTERM (e.g. SLURM preemption, or the launcher passing one on) instead of dying;
    the loop checks `requested` after each optimizer step, saves a checkpoint and stops."""

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
