"""``entropy``: u = -sum_c p_c log p_c."""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register
from pipeline.active.strategies.base import as_class_probs, check_probs


def entropy(p: np.ndarray) -> np.ndarray:
    """u = -sum_c p_c log p_c (natural log; 0 log 0 = 0)."""
    q = as_class_probs(check_probs(p)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    return (-terms.sum(axis=1)).astype(np.float32)


@register("entropy")
def entropy_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    return entropy(p)
