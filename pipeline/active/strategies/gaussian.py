"""``gaussian``: a weighted sample without replacement, weights w = N(p_pos; 0.5, sigma) up to a constant.

Efraimidis-Spirakis keys: the top-k of ``u = log(U) / w``, U ~ U(0, 1), is such a sample.
"""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import StrategySettings, register
from pipeline.active.strategies.base import positive_probability


def gaussian_weights(p: np.ndarray, sigma: float) -> np.ndarray:
    """w = exp(-(p - 0.5)^2 / (2 sigma^2)): the N(0.5, sigma) density up to a constant."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    d = positive_probability(p).astype(np.float64) - 0.5
    return np.exp(-d * d / (2.0 * sigma * sigma))


@register("gaussian")
def gaussian_priority(p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    w = gaussian_weights(p, cfg.sigma)
    u = rng.random(len(p))
    with np.errstate(divide="ignore"):
        return np.log(u) / np.maximum(w, 1e-300)
