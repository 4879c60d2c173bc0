"""``random``: u = U(0, 1), so the top-k is a uniform sample without replacement (the baseline)."""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register


@register("random")
def random_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    return rng.random(len(p))
