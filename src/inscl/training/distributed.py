"""Multi-process training: how many processes a job runs, the launcher that starts them and stops
them on SIGTERM within a grace period, and the process group.

The launcher plays torchrun's part (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) on
one node. Unlike torchrun, which gives its workers a fixed 30 s between SIGTERM and SIGKILL,
it waits `training.stop_grace_s`: long enough for the workers to finish their step and write
an emergency checkpoint (docs/training.md).
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from inscl.core.io import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_count(requested_gpus: int, visible_gpus: int | None = None) -> int:
    """Processes for a job: one per GPU asked for (one on the CPU for gpus: 0).

    A job never runs on fewer GPUs than it asked for, nor on the CPU when it asked for GPUs:
    either would change its speed and memory without a word.
    """
    visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if requested_gpus == 0:
        return 1
    where = f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}"
    if visible == 0:
        raise InputError(
            "config",
            f"training.gpus is {requested_gpus} but this torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}, {where}); set training.gpus: 0 to train on the CPU",
            field="training.gpus",
        )
    if visible < requested_gpus:
        raise InputError(
            "config",
            f"training.gpus is {requested_gpus} but only {visible} GPU(s) are visible ({where})",
            field="training.gpus",
        )
    return requested_gpus


def device_for(requested_gpus: int, ranks: Ranks) -> torch.device:
    """This process's device: its GPU, or the CPU for gpus: 0."""
    if requested_gpus == 0:
        return torch.device("cpu")
    process_count(requested_gpus)
    return torch.device("cuda", ranks.local_rank)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_command(spec_path: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "inscl.training.train", "--spec", str(spec_path)]


def launch(command: list[str], nproc: int, grace_s: float, env: dict | None = None) -> None:
    """Run `command` once per rank on this node (a training process, `worker_command`) and wait for all.

    SIGTERM (or SIGINT) is passed on to every process, which then saves a checkpoint and exits;
    after `grace_s` seconds the survivors are killed. A process that fails stops the others the
    same way, and the job fails with its status.
    """
    base = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    base.update(WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc))
    log.info("launching %d training processes: %s", nproc, " ".join(command))
    workers = [
        subprocess.Popen(command, env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}) for rank in range(nproc)
    ]
    stopping: list[float] = []

    def stop(signum=signal.SIGTERM, frame=None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    failures: list[tuple[int, int]] = []  # (rank, status) in the order noticed
    try:
        while any(worker.poll() is None for worker in workers):
            for rank, worker in enumerate(workers):
                if worker.poll() not in (None, 0) and rank not in dict(failures):
                    failures.append((rank, worker.returncode))
            if failures:
                stop()
            if stopping and time.monotonic() - stopping[0] > grace_s:
                log.error("training processes still running %.0f s after SIGTERM: killing them", grace_s)
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failures += [(rank, w.returncode) for rank, w in enumerate(workers) if w.returncode and rank not in dict(failures)]
    if failures:
        rank, status = failures[0]
        raise RuntimeError(f"training process {rank} of {nproc} exited with status {status}")


def init_from_env(requested_gpus: int, timeout_min: float) -> Ranks:
    """Join the launcher's process group (NCCL on GPUs, gloo on the CPU) with a collective timeout
    of `timeout_min`; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested_gpus:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if requested_gpus else "gloo", timeout=datetime.timedelta(minutes=timeout_min)
        )
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def any_rank(flags: list[bool], ranks: Ranks, device: torch.device) -> list[bool]:
    """Each flag, true on every rank when it is true on any (so that all ranks act on the same step)."""
    if not ranks.distributed:
        return flags
    import torch.distributed as dist

    values = torch.tensor([int(flag) for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def gather_rng_states(ranks: Ranks) -> dict:
    """Every rank's torch (and CUDA) RNG state, for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(ranks.local_rank)
    if not ranks.distributed:
        return {"ranks": [state]}
    import torch.distributed as dist

    states: list = [None] * ranks.world_size
    dist.all_gather_object(states, state)
    return {"ranks": states}


def restore_rng_states(saved: dict, ranks: Ranks) -> None:
    """Put back this rank's RNG state from a checkpoint."""
    state = saved["ranks"][ranks.rank]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], ranks.local_rank)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
