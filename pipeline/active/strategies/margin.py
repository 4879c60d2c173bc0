"""``margin``: u = 1 - (p_(1) - p_(2)), a small gap between the two likeliest classes = uncertain."""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register
from pipeline.active.strategies.base import as_class_probs, check_probs


def margin(p: np.ndarray) -> np.ndarray:
    """u = 1 - (p_(1) - p_(2)): small gap between the two likeliest classes = uncertain."""
    q = as_class_probs(check_probs(p))
    if q.shape[1] == 2:
        return 1.0 - np.abs(q[:, 1] - q[:, 0])
    top2 = -np.partition(-q, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


@register("margin")
def margin_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    return margin(p)
