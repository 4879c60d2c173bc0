"""``none``: the ``k`` highest priorities (the strategy alone)."""

from __future__ import annotations

import numpy as np

from pipeline.active.diversity import DiversitySettings, register
from pipeline.active.strategies.base import top_k


@register("none")
def no_diversity(
    x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None, seed: int, cfg: DiversitySettings
) -> np.ndarray:
    return top_k(u, k)
