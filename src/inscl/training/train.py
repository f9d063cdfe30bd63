"""Continual fine-tuning of one stage: the job, its training recipe, and the process entry points.

The training of a stage is a pure function of its inputs: the example order, the batches and
every random draw derive from the job's seed, so a run killed and resumed from a checkpoint ends
with the same weights as an uninterrupted one (on the CPU).

The recipe's parts live beside it: examples.py (rows and tokens), batching.py (the batch plan),
models.py (the trainable model), loss.py, optimizer.py and checkpoints.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from inscl.core import artifacts
from inscl.core.hashing import stable_seed
from inscl.core.io import InputError, atomic_dir
from inscl.training import distributed
from inscl.training.batching import collate, plan_training, rank_share
from inscl.training.checkpoints import (
    StopOnSigterm,
    checkpoint_fingerprint,
    full_state_options,
    job_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from inscl.training.examples import encode_examples, load_training_rows
from inscl.training.loss import AnswerLoss
from inscl.training.models import (
    autocast_dtype,
    causal_lm,
    count_parameters,
    has_tokenizer,
    load_tokenizer,
    load_trainable,
    resolve_model_path,
    wrap_parallel,
)
from inscl.training.optimizer import build_optimizer, learning_rate_at, set_learning_rate

log = logging.getLogger(__name__)


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


def replay_file(replay_dir, stage: int) -> str | None:
    """The replay set of a chain stage, `<replay_dir>/stage{k}.parquet`; stage 1 may have none."""
    path = Path(replay_dir) / f"stage{stage}.parquet"
    if path.exists():
        return str(path)
    if stage == 1:
        return None
    raise InputError(path, f"replay set of stage {stage} is missing")


class StageTrainer:
    """The training recipe of one stage on one rank: `setup` builds the data, model and optimizer,
    `resume` continues from a valid checkpoint, `train` runs the loop of `train_step`s and
    `checkpoint`s, `finish` saves the model and the log."""

    def __init__(self, job: TrainJob, ranks: distributed.Ranks):
        self.job = job
        self.training = job.training
        self.ranks = ranks
        self.device = training_device(ranks)
        self.amp_dtype = autocast_dtype(self.training.get("precision", "auto"), self.device)

    def setup(self) -> None:
        """Tokenizer, examples and their batch plan; the model, wrapped for data parallelism; the optimizer."""
        job, training, device = self.job, self.training, self.device
        torch.manual_seed(stable_seed(job.seed, "torch"))  # e.g. a fresh LoRA adapter's weights
        self.tokenizer = load_tokenizer(job.previous if has_tokenizer(job.previous) else job.base, job.model)
        rows = load_training_rows(job.instances, job.tasks, job.replay)
        frozen_dtype = self.amp_dtype if device.type == "cuda" and self.amp_dtype else torch.float32
        self.model = load_trainable(job.previous, job.base, job.model, training, frozen_dtype)
        max_length = min(int(training["max_length"]), int(causal_lm(self.model).config.max_position_embeddings))
        self.examples = encode_examples(self.tokenizer, rows, training.get("template", "plain"), max_length)
        self.plan = plan_training(self.examples, training, job.epochs, job.seed, self.ranks.world_size)
        self.trainable_parameters, self.total_parameters = count_parameters(self.model)
        log.info(
            "%s: %d examples (%d replayed), %d steps, %s, %d of %d parameters trainable, device %s",
            job.label,
            len(self.examples),
            int(rows["replayed"].sum()),
            len(self.plan.steps),
            "packed" if self.plan.packed else "padded",
            self.trainable_parameters,
            self.total_parameters,
            device,
        )
        if training.get("gradient_checkpointing"):
            causal_lm(self.model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        causal_lm(self.model).config.use_cache = False
        self.model.to(device).train()
        self.wrapped = wrap_parallel(AnswerLoss(self.model), self.ranks, bool(training.get("fsdp")), device)
        torch.manual_seed(stable_seed(job.seed, "dropout", self.ranks.rank))  # own dropout masks per rank
        self.optimizer = build_optimizer(self.wrapped, training)

    def resume(self) -> None:
        """Continue from the newest checkpoint of this job (same tokens, settings and start model);
        a checkpoint of other inputs is deleted and training starts afresh."""
        self.fingerprint = job_fingerprint(self.job, self.examples, self.ranks.world_size)
        self.start_step, self.elapsed_before, self.log_rows = 0, 0.0, []
        checkpoint = latest_checkpoint(self.job.checkpoints)
        if checkpoint is None:
            return
        if checkpoint_fingerprint(checkpoint) == self.fingerprint:
            state, self.log_rows = load_checkpoint(checkpoint, self.wrapped, self.optimizer, self.ranks)
            self.start_step, self.elapsed_before = state["step"], state["elapsed_s"]
            log.info("resumed from checkpoint %s at step %d of %d", checkpoint, self.start_step, len(self.plan.steps))
            return
        log.warning("checkpoint %s belongs to other inputs or settings; starting afresh", checkpoint)
        if self.ranks.is_main:
            shutil.rmtree(self.job.checkpoints, ignore_errors=True)
        distributed.barrier(self.ranks)

    def train(self) -> None:
        """The loop over optimizer steps, from `start_step` to the end of the plan."""
        training, plan = self.training, self.plan
        total_steps = len(plan.steps)
        max_grad_norm = training.get("max_grad_norm", 1.0)
        started = time.perf_counter()
        progress = tqdm(
            total=total_steps,
            initial=self.start_step,
            desc=self.job.label or "train",
            disable=not self.ranks.is_main,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        with progress, StopOnSigterm() as stop:
            for step in range(self.start_step, total_steps):
                step_start = time.perf_counter()

                # Set the learning rate of this step.
                lr = learning_rate_at(
                    step, total_steps, training["learning_rate"], training["schedule"], training["warmup_ratio"]
                )
                set_learning_rate(self.optimizer, lr)

                # Forward and backward over this rank's micro-batches; the gradients accumulate.
                loss_sum, tokens = self.train_step(step)

                # Clip the gradient, update the weights, flush the gradients.
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in self.wrapped.parameters() if p.requires_grad], max_grad_norm
                    )
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)

                # Log the loss per answer token and the throughput, over all ranks.
                loss_sum, tokens = sum_over_ranks(loss_sum, tokens, self.ranks)
                now = time.perf_counter()
                self.log_rows.append(
                    {
                        "step": step + 1,
                        "epoch": plan.epoch_of(plan.steps[step][-1] + 1),
                        "loss": loss_sum / plan.step_targets[step],
                        "learning_rate": lr,
                        "tokens_per_s": tokens / max(now - step_start, 1e-9),
                        "peak_memory_mb": peak_memory_mb(self.device),
                        "elapsed_s": self.elapsed_before + now - started,
                    }
                )
                progress.update(1)
                progress.set_postfix(loss=f"{self.log_rows[-1]['loss']:.4f}")

                # Checkpoint every `checkpoint_every` steps, and stop after one when any rank got SIGTERM.
                interrupted = distributed.any_rank(stop.requested, self.ranks)
                if interrupted or ((step + 1) % training["checkpoint_every"] == 0 and step + 1 < total_steps):
                    self.checkpoint(step + 1)
                if interrupted:
                    raise TrainingInterrupted(f"{self.job.label}: interrupted at step {step + 1}; rerun to resume")

    def train_step(self, step: int) -> tuple[torch.Tensor, int]:
        """Forward and backward over this rank's share of the step's micro-batches, gradients
        accumulated and synchronised across ranks on the last one. Returns this rank's summed
        answer-token loss and its tokens."""
        share = rank_share(self.plan.steps[step], self.ranks)
        loss_sum = torch.zeros((), dtype=torch.float64)
        tokens = 0
        for position, (micro_batch, weight) in enumerate(share):
            batch = collate(self.plan, micro_batch, self.examples, self.tokenizer.pad_token_id)
            inputs = {k: (v.to(self.device) if v is not None else None) for k, v in batch.items()}
            sync = position == len(share) - 1 or not hasattr(self.wrapped, "no_sync")
            no_sync = self.wrapped.no_sync() if not sync else contextlib.nullcontext()
            autocast = torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            )
            with no_sync, autocast:
                summed = self.wrapped(**inputs)
                # The step's mean over its answer tokens; DDP/FSDP average over ranks, the world size makes it a sum.
                loss = summed * (weight * self.ranks.world_size / self.plan.step_targets[step])
            loss.backward()
            loss_sum += summed.detach().double().cpu() * weight
            tokens += sum(len(self.examples[i]) for i in self.plan.example_indices(micro_batch)) * int(weight)
        return loss_sum, tokens

    def checkpoint(self, step: int) -> None:
        """Save what `resume` needs to continue after `step` optimizer steps."""
        state = {"fingerprint": self.fingerprint, "elapsed_s": self.log_rows[-1]["elapsed_s"]}
        save_checkpoint(self.job.checkpoints, step, self.wrapped, self.optimizer, state, self.train_log(), self.ranks)

    def finish(self) -> dict:
        """Save the model and the train log, delete the checkpoints; returns a summary of the run."""
        self.save_model()
        if self.ranks.is_main:
            artifacts.write(self.train_log(), "train_log", self.job.output_log)
            shutil.rmtree(self.job.checkpoints, ignore_errors=True)
        distributed.barrier(self.ranks)
        return {
            "start_step": self.start_step,
            "steps_run": len(self.plan.steps) - self.start_step,
            "total_steps": len(self.plan.steps),
            "final_loss": self.log_rows[-1]["loss"] if self.log_rows else None,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
        }

    def save_model(self) -> None:
        """save_pretrained the result: full weights, or the adapter (merged into full weights when
        lora.merge_after_stage). Sharded (FSDP) weights are gathered into a CPU copy first."""
        job, ranks, model = self.job, self.ranks, self.model
        if ranks.distributed and job.training.get("fsdp"):
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            weights = get_model_state_dict(self.wrapped, options=full_state_options())
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
                self.tokenizer.save_pretrained(tmp)
        distributed.barrier(ranks)

    def train_log(self) -> pd.DataFrame:
        return pd.DataFrame(self.log_rows, columns=artifacts.columns("train_log"))


def training_device(ranks: distributed.Ranks) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sum_over_ranks(loss_sum: torch.Tensor, tokens: int, ranks: distributed.Ranks) -> tuple[float, int]:
    if not ranks.distributed:
        return float(loss_sum), tokens
    import torch.distributed as dist

    values = torch.tensor([float(loss_sum), float(tokens)], dtype=torch.float64, device=training_device(ranks))
    dist.all_reduce(values)
    return float(values[0]), int(values[1])


def train(job: TrainJob, ranks: distributed.Ranks | None = None) -> dict:
    """Train one stage; resume from the newest valid checkpoint in `job.checkpoints`."""
    trainer = StageTrainer(job, ranks or distributed.Ranks())
    trainer.setup()
    trainer.resume()
    trainer.train()
    return trainer.finish()


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
    """`python -m inscl.training.train --spec job.json`: one training process (torchrun starts N)."""
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
