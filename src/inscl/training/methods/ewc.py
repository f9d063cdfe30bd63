"""Elastic weight consolidation (Kirkpatrick et al. 2017, PNAS), in its online form.

The loss of task B after task A (Kirkpatrick et al. 2017, Eq. 3):

    L(θ) = L_B(θ) + Σ_i λ/2 · F_i · (θ_i − θ*_A,i)²

with F the diagonal of the empirical Fisher information at θ*_A. Online EWC (Schwarz et al. 2018,
Progress & Compress) keeps one penalty over all learned tasks instead of one per task:

    F*_k = γ · F*_{k−1} + F_k,    penalty at stage k+1 = λ/2 · Σ F*_k · (θ − θ*_k)²

where θ*_k are the weights stage k ended with (the weights stage k+1 starts from). With γ = 1 this is
TRACE's EWC: a Fisher summed over tasks and never reset (model/Regular/EWC.py:37-40), against the
previous task's weights (EWC.py:48-50), λ = 400 (EWC.py:13).

F_k is the empirical Fisher of stage k's own task: the mean over `fisher_examples` of its training
examples (a seeded sample; replayed rows excluded) of the squared gradient of the example's mean
answer-token negative log-likelihood, at the weights stage k ended with. F*_k is the stage state
(`stage_state.safetensors`, one tensor per trained weight).
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from inscl.core.hashing import stable_seed
from inscl.core.io import InputError, atomic_path
from inscl.training.methods.base import TrainingMethod, gradient_of, trainable


class EWC(TrainingMethod):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.fisher_examples = settings["ewc"]["fisher_examples"]
        self.fisher: dict[str, torch.Tensor] = {}

    def setup(self, trainer) -> None:
        """The previous stage's F* and, as θ*, the weights this stage starts from (λ and γ are read
        from stage 2 on: inscl.core.methods `later_stage_settings`)."""
        path = trainer.job.previous_state
        if not path:
            return
        self.strength, self.gamma = float(self.settings["ewc"]["lambda"]), float(self.settings["ewc"]["gamma"])
        weights = trainable(trainer.model)
        stored = load_file(path, device=str(trainer.device))
        for name in weights:
            if name not in stored:
                raise InputError(path, "no Fisher for a trained weight (another model or training mode?)", field=name)
        self.fisher = {name: stored[name].float() for name in weights}
        self.anchor = {name: p.detach().float().clone() for name, p in weights.items()}

    def penalty(self, trainer) -> torch.Tensor | None:
        """λ/2 · Σ F* (θ − θ*)², summed over every trained weight."""
        if not self.fisher:
            return None
        weights = trainable(trainer.model)
        terms = [(self.fisher[n] * (weights[n].float() - self.anchor[n]) ** 2).sum() for n in weights]
        return 0.5 * self.strength * torch.stack(terms).sum()

    def save_state(self, trainer) -> None:
        """F*_k = γ F*_{k−1} + F_k, written to `job.output_state` (a job without one writes nothing)."""
        if not trainer.ranks.is_main or not trainer.job.output_state:
            return
        fisher = self.empirical_fisher(trainer)
        for name, previous in self.fisher.items():
            fisher[name] += self.gamma * previous
        with atomic_path(trainer.job.output_state, ".safetensors") as tmp:
            save_file({n: f.contiguous().cpu() for n, f in fisher.items()}, str(tmp))

    def empirical_fisher(self, trainer) -> dict[str, torch.Tensor]:
        """F_k: the mean squared gradient of single examples of the stage's own task, dropout off."""
        own = np.flatnonzero(~trainer.rows["replayed"].to_numpy())
        if self.fisher_examples is not None and self.fisher_examples < len(own):
            rng = np.random.default_rng(stable_seed(trainer.job.seed, "ewc_fisher"))
            own = np.sort(rng.choice(own, self.fisher_examples, replace=False))
        weights = trainable(trainer.model)
        fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in weights.items()}
        trainer.model.eval()
        for index in tqdm(own, desc="EWC Fisher", disable=not trainer.ranks.is_main, leave=False):
            example = trainer.examples[index]
            loss = trainer.answer_loss([int(index)]) / example.targets
            for name, grad in gradient_of(loss, weights).items():
                fisher[name] += grad.float() ** 2
        trainer.model.train()
        return {name: f / len(own) for name, f in fisher.items()}
