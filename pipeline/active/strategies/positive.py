"""``positive``: u = p_pos, the likeliest positives first (Curator's "show me more like this")."""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register
from pipeline.active.strategies.base import positive_probability


@register("positive")
def positive_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    return positive_probability(p)
