"""``least_confidence``: u = 1 - max_c p_c."""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register
from pipeline.active.strategies.base import as_class_probs, check_probs


def least_confidence(p: np.ndarray) -> np.ndarray:
    """u = 1 - max_c p_c."""
    return 1.0 - as_class_probs(check_probs(p)).max(axis=1)


@register("least_confidence")
def least_confidence_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    return least_confidence(p)
