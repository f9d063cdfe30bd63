"""The hooks a continual-learning method plugs into a stage's training (inscl.training.train.StageTrainer).

`TrainingMethod` does nothing in every hook: it is sequential fine-tuning. A method overrides what it
changes, in the order the trainer calls them:

- `load_model(trainer)`: what is trained (e.g. a new LoRA adapter per task); None = the trainer's default.
- `setup(trainer)`: read what the stage starts from: the previous stage's state, a teacher, a memory.
- `extra_loss(trainer, inputs)`: a loss term of the micro-batch just forwarded (`inputs`), summed over its answer tokens
  like the task loss (the trainer scales both the same way).
- `penalty(trainer)`: a term of the weights, once per optimizer step; its gradient joins the step's.
- `after_backward(trainer, step)`: change the step's gradient (a constraint), before clipping.
- `save_model(trainer)`: write the stage's model folder itself (True) or leave it to the trainer.
- `save_state(trainer)`: write the stage state the next stage reads (`job.output_state`).
"""

from __future__ import annotations

import importlib

import torch


class TrainingMethod:
    def __init__(self, settings: dict):
        self.settings = settings  # the method's config sections, e.g. {"ewc": {...}}

    def load_model(self, trainer):
        return None

    def setup(self, trainer) -> None:
        pass

    def extra_loss(self, trainer, inputs: dict) -> torch.Tensor | None:
        return None

    def penalty(self, trainer) -> torch.Tensor | None:
        return None

    def after_backward(self, trainer, step: int) -> None:
        pass

    def save_model(self, trainer) -> bool:
        return False

    def save_state(self, trainer) -> None:
        pass


def load_method(spec: str | None, settings: dict) -> TrainingMethod:
    """The hook object of a `module:Class` spec (inscl.core.methods), or plain fine-tuning for None."""
    if spec is None:
        return TrainingMethod(settings)
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)(settings)


def trainable(model) -> dict[str, torch.nn.Parameter]:
    """name -> parameter of every trained weight, in a fixed order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def gradient_of(loss: torch.Tensor, parameters: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """d loss / d parameter, without touching `.grad` (nor the hooks of a data-parallel wrapper)."""
    names = list(parameters)
    grads = torch.autograd.grad(loss, [parameters[n] for n in names], allow_unused=True)
    return {n: g for n, g in zip(names, grads) if g is not None}
