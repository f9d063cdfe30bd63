"""The optimizer of a stage (AdamW, weight decay on matrices only) and its learning-rate schedule."""

from __future__ import annotations

import math

import torch


def build_optimizer(module: torch.nn.Module, training: dict) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; norms and biases (fewer than 2 dimensions) are not decayed."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": training.get("weight_decay", 0.0)},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=training["learning_rate"],
    )


def learning_rate_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_ratio: float) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then constant or cosine to 0."""
    warmup = math.ceil(warmup_ratio * total_steps)
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
