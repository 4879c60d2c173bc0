"""``closest``: the points nearest their level-1 centroid first (the CSR order; Vo et al. 2024)."""

from __future__ import annotations

import numpy as np

from pipeline.sampling.objectives.base import Objective, cluster_of_positions


def closest_rank(x: None, offsets: np.ndarray, items: np.ndarray, budgets: np.ndarray, rng, **_) -> np.ndarray:
    """rank_i = position of i in its cluster's distance-sorted member list."""
    return np.arange(len(items), dtype=np.int64) - offsets[cluster_of_positions(offsets)]


CLOSEST = Objective("closest", closest_rank, False, "points nearest their cluster centroid first")
