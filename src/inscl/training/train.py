"""Continual fine-tuning of one stage: the job, its training recipe, and the process entry points.

The training of a stage is a pure function of its inputs: the example order, the steps and
every random draw derive from the job's seed, so a run killed and resumed from a checkpoint ends
with the same weights as an uninterrupted one (on the CPU).

The recipe's parts live beside it: examples.py (rows and tokens), batching.py (the step plan and
micro-batches), attention.py (kernels that keep packed examples apart), models.py (the trainable
model), parallel.py (DDP / FSDP2), loss.py, optimizer.py and checkpoints.py; a continual-learning
method's hooks (a loss term, a gradient constraint, what is trained, the stage state) in methods/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from inscl.core import artifacts
from inscl.core.hashing import stable_seed
from inscl.core.io import InputError, atomic_dir
from inscl.core.methods import METHODS
from inscl.training import attention, distributed, parallel
from inscl.training.batching import append_pass, collate, plan_training, rank_share
from inscl.training.checkpoints import (
    StopOnSigterm,
    carry_optimizer,
    checkpoint_fingerprint,
    job_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_optimizer,
)
from inscl.training.examples import Lengths, encode_examples, load_pass_rows, load_training_rows
from inscl.training.loss import AnswerLoss
from inscl.training.methods.base import gradient_of, load_method, trainable
from inscl.training.models import (
    DTYPES,
    causal_lm,
    compute_dtype,
    count_parameters,
    has_tokenizer,
    load_tokenizer,
    load_trainable,
    resolve_model_path,
    save_dtype,
)
from inscl.training.optimizer import build_optimizer, learning_rate_at, set_learning_rate

log = logging.getLogger(__name__)


# What the loss module takes from a collated micro-batch (the kernel's extras come from attention.py).
MODEL_INPUTS = ("input_ids", "labels", "position_ids", "attention_mask")


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
    previous_optimizer: str | None = None  # training.optimizer.state carry: the state stage k-1 left
    output_optimizer: str | None = None  # ... and the state this stage leaves
    method: str | None = None  # a chain's method (inscl.core.methods); None = plain fine-tuning
    method_settings: dict = dataclasses.field(default_factory=dict)  # its settings, shaped like the config
    previous_state: str | None = None  # the stage state stage k-1 left (e.g. EWC's Fisher)
    output_state: str | None = None  # ... and the one this stage leaves
    extra_pass: str | None = None  # rows of one more epoch after the stage's own (extra{k}.parquet, TRACE's replay)

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


def check_settings(training: dict) -> None:
    """Combinations of settings that cannot work, as one-line errors."""
    if training["fsdp"] and training["mode"] == "lora":
        raise InputError(
            "config",
            "fsdp shards full fine-tuning; LoRA trains a small adapter on a base every GPU holds: set fsdp: false",
            field="training.fsdp",
        )
    if (
        training["optimizer"]["state"] == "carry"
        and training["mode"] == "lora"
        and training["lora"]["merge_after_stage"]
    ):
        raise InputError(
            "config",
            "optimizer state carry needs the same trainable weights in every stage, but merge_after_stage "
            "starts a fresh adapter each stage",
            field="training.optimizer.state",
        )


class StageTrainer:
    """The training recipe of one stage on one rank: `setup` builds the data, model and optimizer,
    `resume` continues from a valid checkpoint, `train` runs the loop of `train_step`s and
    `checkpoint`s, `finish` saves the model, the optimizer state and the log."""

    def __init__(self, job: TrainJob, ranks: distributed.Ranks):
        self.job = job
        self.training = job.training
        self.ranks = ranks
        self.device = distributed.device_for(self.training["gpus"], ranks)
        self.compute = compute_dtype(self.training["precision"], self.device)
        self.packed = bool(self.training["packing"])
        self.fsdp = ranks.distributed and bool(self.training["fsdp"])
        self.slack = attention.slack(self.training["attention"])

    def setup(self) -> None:
        """Tokenizer, examples and their step plan; the model, wrapped for data parallelism; the optimizer."""
        job, training, device = self.job, self.training, self.device
        check_settings(training)
        attention.check_backend(training["attention"], device)
        kernel = attention.implementation(training["attention"], self.packed)
        torch.manual_seed(stable_seed(job.seed, "torch"))  # e.g. a fresh LoRA adapter's weights
        self.kernel = kernel
        self.tokenizer = load_tokenizer(job.previous if has_tokenizer(job.previous) else job.base, job.model)
        # The method's hooks; a method whose replay set is its memory (A-GEM) does not train on it.
        spec = METHODS[job.method] if job.method else None
        self.method = load_method(spec.training if spec else None, job.method_settings)
        mixed = job.replay if not (spec and spec.memory) else None
        self.rows = rows = load_training_rows(job.instances, job.tasks, mixed)
        if self.fsdp:
            master = DTYPES[training["master_weights"]]
            self.model, self.wrapped = parallel.load_sharded(
                job.previous, job.model, master, kernel, device, AnswerLoss, self.compute
            )
        else:
            self.model = self.method.load_model(self) or load_trainable(
                job.previous, job.base, job.model, training, device, kernel
            )
        self.limits = Lengths.of(training, causal_lm(self.model).config.max_position_embeddings)
        self.examples = encode_examples(self.tokenizer, rows, training["template"], self.limits)
        self.plan = plan_training(self.examples, training["batch_size"], job.epochs, job.seed)
        # TRACE's replay: one more epoch over the extra-pass rows, in their order, after the stage's own.
        if job.extra_pass:
            first = len(self.examples)
            self.examples += encode_examples(
                self.tokenizer, load_pass_rows(job.extra_pass), training["template"], self.limits
            )
            self.plan = append_pass(self.plan, self.examples, first, training["batch_size"])
        self.lengths = np.array([len(e) for e in self.examples])
        if training["gradient_checkpointing"]:
            causal_lm(self.model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        causal_lm(self.model).config.use_cache = False
        self.model.train()
        if not self.fsdp:
            self.loss_module = AnswerLoss(self.model)
            self.wrapped = parallel.replicate(self.loss_module, self.ranks, device)
        self.method.setup(self)  # the previous stage's state, a teacher, a memory
        torch.manual_seed(stable_seed(job.seed, "dropout", self.ranks.rank))  # own dropout masks per rank
        self.optimizer = build_optimizer(self.wrapped, training)
        if job.previous_optimizer:
            carry_optimizer(job.previous_optimizer, self.wrapped, self.optimizer)
        self.trainable_parameters, self.total_parameters = count_parameters(self.wrapped)
        log.info(
            "%s: %d examples (%d replayed), %d steps of %d examples, %s %s, %d of %d parameters trainable, %s",
            job.label,
            len(self.examples),
            int(rows["replayed"].sum()),
            len(self.plan.steps),
            training["batch_size"],
            "packed" if self.packed else "padded",
            training["attention"],
            self.trainable_parameters,
            self.total_parameters,
            f"{self.ranks.world_size} x {device.type}" + (" FSDP" if self.fsdp else ""),
        )

    def resume(self) -> None:
        """Continue from the newest checkpoint of this job (same tokens, settings, start model and
        process layout); a checkpoint of other inputs is deleted and training starts afresh."""
        self.fingerprint = job_fingerprint(self.job, self.examples, self.ranks)
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
        distributed.barrier(self.ranks)  # every rank has read the fingerprint before it goes
        if self.ranks.is_main:
            shutil.rmtree(self.job.checkpoints, ignore_errors=True)

    def train(self) -> None:
        """The loop over optimizer steps, from `start_step` to the end of the plan."""
        training, plan = self.training, self.plan
        total_steps = len(plan.steps)
        started = last_checkpoint = time.perf_counter()
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

                # Set the learning rate of this step: the schedule over the stage's own epochs, then the
                # task's learning rate, constant, over an extra pass.
                if plan.in_extra_pass(step):
                    lr = training["learning_rate"]
                else:
                    lr = learning_rate_at(
                        step,
                        plan.stage_steps or total_steps,
                        training["learning_rate"],
                        training["schedule"],
                        training["warmup_ratio"],
                    )
                set_learning_rate(self.optimizer, lr)

                # Forward and backward over this rank's micro-batches; the gradients accumulate
                # and are synchronised across ranks on the last one.
                loss_sum, tokens = self.train_step(step)

                # The method's penalty on the weights joins the gradient; its constraint changes it.
                self.add_penalty()
                self.method.after_backward(self, step)

                # Clip the gradient, update the weights, flush the gradients.
                if training["max_grad_norm"]:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in self.wrapped.parameters() if p.requires_grad], training["max_grad_norm"]
                    )
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)

                # Log the loss per answer token and the throughput, over all ranks.
                loss_sum, tokens = sum_over_ranks(loss_sum, tokens, self.ranks, self.device)
                now = time.perf_counter()
                self.log_rows.append(
                    {
                        "step": step + 1,
                        "epoch": plan.epoch_after(step),
                        "loss": loss_sum / plan.targets[step],
                        "learning_rate": lr,
                        "tokens_per_s": tokens / max(now - step_start, 1e-9),
                        "peak_memory_mb": peak_memory_mb(self.device),
                        "elapsed_s": self.elapsed_before + now - started,
                    }
                )
                progress.update(1)
                progress.set_postfix(loss=f"{self.log_rows[-1]['loss']:.4f}")

                # Checkpoint every `checkpoint_every` steps or `checkpoint_every_minutes` (rank 0's
                # clock), and stop after one when any rank got SIGTERM; all ranks agree on both.
                due = (step + 1) % training["checkpoint_every"] == 0 or (
                    self.ranks.is_main and now - last_checkpoint >= 60 * training["checkpoint_every_minutes"]
                )
                interrupted, due = distributed.any_rank([stop.requested, due], self.ranks, self.device)
                if interrupted or (due and step + 1 < total_steps):
                    self.checkpoint(step + 1)
                    last_checkpoint = time.perf_counter()
                if interrupted:
                    raise TrainingInterrupted(f"{self.job.label}: interrupted at step {step + 1}; rerun to resume")

    def train_step(self, step: int) -> tuple[torch.Tensor, int]:
        """Forward and backward over this rank's share of the step's examples, packed into
        micro-batches of at most `micro_batch_tokens`. Returns this rank's summed answer-token
        loss and its tokens."""
        share = rank_share(self.plan.steps[step], self.lengths, self.ranks, self.training["micro_batch_tokens"])
        # The step's mean over its answer tokens; DDP/FSDP average over ranks, the world size makes it a sum.
        scale = self.ranks.world_size / self.plan.targets[step]
        loss_sum = torch.zeros((), dtype=torch.float64)
        tokens = 0
        for position, (indices, weight) in enumerate(share):
            inputs = self.batch_inputs(indices, self.examples)
            with parallel.gradient_sync(self.wrapped, position == len(share) - 1), self.autocast():
                summed = self.wrapped(**inputs)
                extra = self.method.extra_loss(self, inputs)  # e.g. LwF's distillation, summed like the loss
                ((summed if extra is None else summed + extra) * (weight * scale)).backward()
            loss_sum += summed.detach().double().cpu() * weight
            tokens += int(self.lengths[indices].sum()) * int(weight)
        return loss_sum, tokens

    def batch_inputs(self, indices: list[int], examples: list) -> dict:
        """The model inputs of one micro-batch of `examples`, on the device."""
        batch = collate(indices, examples, self.tokenizer.pad_token_id, self.packed, self.slack)
        inputs = {k: batch[k].to(self.device) for k in MODEL_INPUTS if k in batch}
        inputs.update(attention.forward_kwargs(self.training["attention"], batch, self.device))
        return inputs

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.compute or torch.float32, enabled=bool(self.compute) and not self.fsdp
        )

    def answer_loss(self, indices: list[int], examples: list | None = None) -> torch.Tensor:
        """Summed answer-token loss of a micro-batch, outside the data-parallel wrapper (a method's
        own forward passes: EWC's Fisher, A-GEM's memory)."""
        with self.autocast():
            return self.loss_module(**self.batch_inputs(indices, self.examples if examples is None else examples))

    def add_penalty(self) -> None:
        """Add the gradient of the method's penalty (a function of the weights, e.g. EWC's) to the step's."""
        penalty = self.method.penalty(self)
        if penalty is None:
            return
        weights = trainable(self.model)
        for name, grad in gradient_of(penalty, weights).items():
            weights[name].grad = grad if weights[name].grad is None else weights[name].grad + grad

    def checkpoint(self, step: int) -> None:
        """Save what `resume` needs to continue after `step` optimizer steps, and say how long it took
        (a SIGTERM checkpoint must fit in training.stop_grace_s)."""
        started = time.perf_counter()
        state = {"fingerprint": self.fingerprint, "elapsed_s": self.log_rows[-1]["elapsed_s"]}
        save_checkpoint(self.job.checkpoints, step, self.wrapped, self.optimizer, state, self.train_log(), self.ranks)
        seconds = time.perf_counter() - started
        log.info("checkpoint at step %d written in %.1f s", step, seconds)
        if seconds > 0.5 * self.training["stop_grace_s"]:
            log.warning(
                "a checkpoint takes %.0f s, more than half of training.stop_grace_s (%d s): a SIGTERM save may be killed",
                seconds,
                self.training["stop_grace_s"],
            )

    def finish(self) -> dict:
        """Save the optimizer state (carry), the model and the train log, delete the checkpoints;
        returns a summary of the run."""
        if self.job.output_optimizer:
            save_optimizer(self.job.output_optimizer, self.wrapped, self.optimizer, self.ranks)
        if not self.method.save_model(self):
            self.save_model()
        self.method.save_state(self)  # e.g. EWC's Fisher, for the next stage
        if self.ranks.is_main:
            artifacts.write(self.train_log(), "train_log", self.job.output_log)
            shutil.rmtree(self.job.checkpoints, ignore_errors=True)
        return {
            "start_step": self.start_step,
            "steps_run": len(self.plan.steps) - self.start_step,
            "total_steps": len(self.plan.steps),
            "final_loss": self.log_rows[-1]["loss"] if self.log_rows else None,
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
        }

    def save_model(self) -> None:
        """save_pretrained the result in training.save_dtype (safetensors): the full weights, or for
        LoRA the adapter only (merged into full weights when lora.merge_after_stage). Sharded weights
        are gathered on rank 0, which writes alone: the other ranks are done and wait for nothing."""
        job, model = self.job, self.model
        dtype = save_dtype(job.training, job.base)
        weights = parallel.gather_weights(model, dtype, self.ranks) if self.fsdp else None
        if not self.ranks.is_main:
            return
        lora = job.training["mode"] == "lora"
        if lora and job.training["lora"]["merge_after_stage"]:
            model, lora = model.merge_and_unload(), False
        if lora:
            model.peft_config["default"].base_model_name_or_path = resolve_model_path(job.base)
            weights = {k: v.detach().to(dtype).cpu() for k, v in model.state_dict().items() if "lora_" in k}
        else:
            model = causal_lm(model)
            weights = weights or {k: v.detach().to(dtype).cpu() for k, v in model.state_dict().items()}
        with atomic_dir(job.output_model) as tmp:
            model.save_pretrained(tmp, state_dict=weights)
            if not lora:  # save_pretrained writes the dtype of the weights in memory
                model.config.dtype = dtype
                model.config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

    def train_log(self) -> pd.DataFrame:
        return pd.DataFrame(self.log_rows, columns=artifacts.columns("train_log"))


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sum_over_ranks(loss_sum: torch.Tensor, tokens: int, ranks: distributed.Ranks, device) -> tuple[float, int]:
    if not ranks.distributed:
        return float(loss_sum), tokens
    import torch.distributed as dist

    values = torch.tensor([float(loss_sum), float(tokens)], dtype=torch.float64, device=device)
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
    nproc = distributed.process_count(int(job.training["gpus"]))
    if nproc > 1:
        spec = Path(job.checkpoints) / "launch_spec.json"
        job.to_json(spec)
        distributed.launch(distributed.worker_command(str(spec)), nproc, job.training["stop_grace_s"])
        return None
    return train(job)


def main(argv=None) -> int:
    """`python -m inscl.training.train --spec job.json`: one training process (the launcher starts N)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--spec", required=True, help="TrainJob JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the job's share)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    job = TrainJob.from_json(args.spec)
    ranks = distributed.init_from_env(int(job.training["gpus"]), job.training["collective_timeout_min"])
    torch.set_num_threads(args.threads or max(1, int(job.training["threads"]) // ranks.world_size))
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
