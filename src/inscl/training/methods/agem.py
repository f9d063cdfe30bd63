"""Averaged gradient episodic memory (A-GEM; Chaudhry et al. 2019, ICLR, Eq. 11).

At every optimizer step, with g the step's gradient and g_ref the gradient of the loss on a batch
drawn from the episodic memory of the earlier tasks:

    g̃ = g − (gᵀ g_ref / g_refᵀ g_ref) · g_ref   if gᵀ g_ref < 0,   else g̃ = g

so the update does not increase the memory loss to first order (official code:
facebookresearch/agem model/model.py:1163-1172). The memory is the stage's replay set, chosen by a
replay strategy (random by default: `replay.replay_per_task` examples of each earlier task, as A-GEM's
per-class memory); it is not trained on. Each step's memory batch holds `agem.memory_batch`
examples drawn without replacement (EPS_MEM_BATCH_SIZE = 256, fc_permute_mnist.py:58), seeded by the
step so that a resumed run draws the same ones. g_ref is the mean answer-token loss's gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from inscl.core.hashing import stable_seed
from inscl.training.batching import pack
from inscl.training.examples import encode_examples, load_training_rows
from inscl.training.methods.base import TrainingMethod, gradient_of, trainable


class AGEM(TrainingMethod):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.memory = []
        self.dots: list[tuple[float, float]] = []  # gᵀg_ref before and after each step's projection

    def setup(self, trainer) -> None:
        """The memory: the replay set's rows, tokenised as training examples."""
        job = trainer.job
        if job.replay is None:
            return
        rows = load_training_rows(job.instances, job.tasks, job.replay)
        memory = rows[rows["replayed"]].reset_index(drop=True)
        if memory.empty:  # stage 1: nothing learned before
            return
        self.memory_batch = int(self.settings["agem"]["memory_batch"])
        self.memory = encode_examples(trainer.tokenizer, memory, trainer.training["template"], trainer.limits)
        self.memory_lengths = np.array([len(e) for e in self.memory])

    def after_backward(self, trainer, step: int) -> None:
        """Project the step's gradient when it disagrees with the memory's."""
        if not self.memory:
            return
        weights = trainable(trainer.model)
        zero = {n: torch.zeros_like(p) for n, p in weights.items()}
        g = {n: p.grad if p.grad is not None else zero[n] for n, p in weights.items()}
        reference = self.reference_gradient(trainer, step, weights)
        dot = sum((g[n].double() * reference[n].double()).sum() for n in weights)
        squared = sum((reference[n].double() ** 2).sum() for n in weights)
        after = dot
        if dot < 0 and squared > 0:
            for n, p in weights.items():
                p.grad = g[n] - (dot / squared).to(g[n].dtype) * reference[n]
            after = sum((p.grad.double() * reference[n].double()).sum() for n, p in weights.items())
        self.reference = reference
        self.dots.append((float(dot), float(after)))

    def reference_gradient(self, trainer, step: int, weights: dict) -> dict[str, torch.Tensor]:
        """g_ref: the gradient of the mean answer-token loss on this step's memory batch."""
        rng = np.random.default_rng(stable_seed(trainer.job.seed, "agem", step))
        batch = np.sort(rng.choice(len(self.memory), min(self.memory_batch, len(self.memory)), replace=False))
        targets = sum(self.memory[i].targets for i in batch)
        reference = {n: torch.zeros_like(p) for n, p in weights.items()}
        for group in pack(self.memory_lengths[batch], trainer.training["micro_batch_tokens"]):
            indices = [int(batch[i]) for i in group]
            loss = trainer.answer_loss(indices, self.memory) / targets
            for n, grad in gradient_of(loss, weights).items():
                reference[n] += grad
        return reference
