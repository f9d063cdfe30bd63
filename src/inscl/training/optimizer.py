"""The optimizer of a stage (`training.optimizer`: Adam or AdamW, betas, eps) and its learning-rate
schedule, as transformers' get_{constant,cosine,linear}_schedule_with_warmup compute it."""

from __future__ import annotations

import math

import torch


def build_optimizer(module: torch.nn.Module, training: dict) -> torch.optim.Optimizer:
    """Adam(W) over the trainable parameters; norms and biases (fewer than 2 dimensions) are not decayed."""
    settings = training["optimizer"]
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[settings["name"]]
    return kind(
        [
            {"params": decay, "weight_decay": training["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=training["learning_rate"],
        betas=tuple(settings["betas"]),
        eps=settings["eps"],
        fused=True,  # one kernel over all parameters (CPU and CUDA)
    )


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    return math.ceil(warmup_ratio * total_steps)


def learning_rate_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based) of a stage: linear warmup from 0 over
    ceil(warmup_ratio x steps), then constant, cosine to 0 or linear to 0 (transformers
    optimization.py, whose schedulers take the i-th optimizer step at lr_lambda(i))."""
    warmup = warmup_steps(total_steps, warmup_ratio)
    if step < warmup:
        return base_lr * step / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule == "linear":
        return base_lr * max(0.0, 1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
