"""Multi-GPU training: how many processes to run, the torchrun command, and the process group."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

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
    """Data-parallel processes for a job: one per GPU the job asked for and can see.

    Asking for more than one GPU on a machine without CUDA is an error; asking for one runs on
    the CPU when no GPU is present.
    """
    visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if requested_gpus > 1 and visible == 0:
        raise RuntimeError(
            f"training.gpus is {requested_gpus} but no CUDA device is visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "set training.gpus to 0 or 1 to train on the CPU"
        )
    if 0 < visible < requested_gpus:
        log.warning("training.gpus is %d but only %d GPU(s) are visible; using %d", requested_gpus, visible, visible)
    return max(1, min(requested_gpus, visible))


def launch_command(spec_path: str, nproc: int, python: str = sys.executable) -> list[str]:
    """torchrun command running `python -m inscl.training.train --spec spec_path` on `nproc` local processes."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "inscl.training.train",
        "--spec",
        str(spec_path),
    ]


def launch(spec_path: str, nproc: int, env: dict | None = None) -> None:
    """Run the data-parallel job and wait; a failed or interrupted process fails the job."""
    command = launch_command(spec_path, nproc)
    log.info("launching %d data-parallel processes: %s", nproc, " ".join(command))
    result = subprocess.run(command, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"data-parallel training exited with status {result.returncode}")


def init_from_env() -> Ranks:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPUs); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank when any rank's flag is set (so all ranks stop at the same step)."""
    if not ranks.distributed:
        return flag
    import torch.distributed as dist

    device = torch.device("cuda", ranks.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_rng_states(ranks: Ranks) -> dict:
    """Every rank's torch (and CUDA) RNG state, gathered on all ranks, for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state(ranks.local_rank)
    if not ranks.distributed:
        return {"ranks": [state]}
    import torch.distributed as dist

    states: list = [None] * ranks.world_size
    dist.all_gather_object(states, state)
    return {"ranks": states}


def restore_rng_states(saved: dict, ranks: Ranks) -> None:
    """Put back this rank's RNG state from a checkpoint."""
    states = saved["ranks"]
    state = states[ranks.rank] if ranks.rank < len(states) else states[0]
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
