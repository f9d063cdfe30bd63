"""One process of the sharded-checkpoint test (tests/test_training_sharded.py), started once per rank by
inscl.training.distributed.launch: it trains a job through the real StageTrainer and records the host
memory (RSS) of this process while the trainer saves its checkpoint and while it builds its model and
resumes, each as a peak (Linux VmHWM, reset before the phase) above the RSS before the model existed
(the interpreter, its libraries and the process group).

    python tests/training_ranks.py SPEC FIGURES.json [SNAPSHOT_DIR]
"""

import ctypes
import json
import shutil
import sys
from pathlib import Path

import torch

from inscl.training import distributed
from inscl.training.train import StageTrainer, TrainJob


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), then VmHWM := VmRSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


class MeasuredTrainer(StageTrainer):
    snapshot: Path | None = None
    figures: dict

    def checkpoint(self, step: int) -> None:
        reset_peak()
        super().checkpoint(step)
        self.figures["save_peak_mb"] = rss_mb("VmHWM") - self.figures["baseline_mb"]
        if self.snapshot and self.ranks.is_main:  # a copy to resume from later (finish deletes the original)
            shutil.copytree(Path(self.job.checkpoints), self.snapshot)


def load_libraries() -> None:
    """Import what the run imports on the way, so that the baseline holds the libraries' code and the
    figures only what the run allocates."""
    import peft  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch.distributed.checkpoint  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401


def main(spec: str, out: str, snapshot: str | None = None) -> None:
    load_libraries()
    job = TrainJob.from_json(spec)
    ranks = distributed.init_from_env(0, 10)
    torch.set_num_threads(1)
    trainer = MeasuredTrainer(job, ranks)
    trainer.snapshot = Path(snapshot) if snapshot else None
    trainer.figures = {"rank": ranks.rank, "baseline_mb": rss_mb("VmRSS")}
    reset_peak()
    trainer.setup()
    trainer.resume()
    trainer.figures["load_peak_mb"] = rss_mb("VmHWM") - trainer.figures["baseline_mb"]
    trainer.train()
    trainer.figures.update(trainer.finish())
    distributed.shutdown(ranks)
    Path(f"{out}.rank{ranks.rank}").write_text(json.dumps(trainer.figures))


if __name__ == "__main__":
    main(*sys.argv[1:])
