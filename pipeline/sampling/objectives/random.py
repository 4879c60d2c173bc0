"""``random``: a uniformly random order inside every level-1 cluster (Meta's ``--sampling_strategy r``)."""

from __future__ import annotations

import numpy as np

from pipeline.sampling.objectives.base import Objective, rank_by_score


def random_rank(
    x: None, offsets: np.ndarray, items: np.ndarray, budgets: np.ndarray, rng: np.random.Generator, **_
) -> np.ndarray:
    """rank by i.i.d. uniform keys: every subset of size b of a cluster is equally likely."""
    return rank_by_score(rng.random(len(items)), offsets)


RANDOM = Objective("random", random_rank, False, "uniformly random points of each cluster")
