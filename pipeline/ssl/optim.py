"""Optimisers (SGD, LARS, Adam/AdamW) and the linear warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def scaled_lr(base_lr: float, global_batch_size: int, reference_batch_size: int = 256) -> float:
    """Linear scaling rule: ``lr = base_lr * global_batch / reference_batch`` (Goyal et al. 2017)."""
    if global_batch_size < 1:
        raise ValueError(f"global batch size must be >= 1, got {global_batch_size}")
    return base_lr * global_batch_size / reference_batch_size


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak_lr: float, final_lr: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based).

    ``lr(t) = peak * (t+1) / W`` for ``t < W``, then
    ``lr(t) = final + (peak - final) * (1 + cos(pi * (t - W) / (T - W))) / 2``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _lars(params: list[torch.nn.Parameter], lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    from lightly.utils.lars import LARS

    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


# ssl.optimizer.name -> (params, lr, momentum, weight_decay) -> optimizer (Adam/AdamW ignore the momentum)
OPTIMIZERS: dict[str, Callable[[list[torch.nn.Parameter], float, float, float], torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, momentum, wd: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd),
    "lars": _lars,
    "adam": lambda params, lr, momentum, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, momentum, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    **_: Any,
) -> torch.optim.Optimizer:
    """``sgd`` | ``lars`` | ``adam`` | ``adamw`` at learning rate ``lr`` (the schedule overwrites it per step)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: use {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](list(params), lr, momentum, weight_decay)
