"""Hierarchical balanced sampling over a cluster hierarchy (Vo et al. 2024, Sec. 4).

The budget is allocated top-down: water-filling over the top-level clusters by the number of
points under each, then, inside every cluster, water-filling of its budget over its children,
down to level 1, where each cluster's points are taken in the order of a selection objective
(:mod:`pipeline.sampling.objectives`: ``closest`` to the centroid first, ``random``, ``typical``
or ``coverage``).

With ``multiplier`` m > 1 a cluster's capacity becomes ``m * size``: small clusters may get
more than their size, and their points are then repeated; point i of a level-1 cluster with
budget b and n points gets multiplicity ``floor(b / n) + [rank_i < b mod n]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.sampling.objectives import OBJECTIVES
from pipeline.sampling.water_filling import segmented_water_filling, water_filling


@dataclass
class BalancedSelection:
    """``indices`` (unique level-1 item ids), ``multiplicity`` per index (sum = target) and
    ``budgets[l]``: the count allocated to every cluster of level l+1."""

    indices: np.ndarray
    multiplicity: np.ndarray
    budgets: list[np.ndarray]


def points_per_cluster(levels: Sequence) -> list[np.ndarray]:
    """Number of level-1 items under every cluster of every level (from the CSR offsets)."""
    counts = [np.diff(levels[0].offsets)]
    for lv in levels[1:]:
        cs = np.concatenate([[0], np.cumsum(counts[-1][lv.sorted_clusters])])
        counts.append(cs[lv.offsets[1:]] - cs[lv.offsets[:-1]])
    return counts


def hierarchical_balanced_sampling(
    levels: Sequence,
    target_size: int,
    *,
    strategy: str = "closest",
    multiplier: int = 1,
    rng: np.random.Generator | int = 0,
    x: np.ndarray | None = None,
    settings: dict | None = None,
) -> BalancedSelection:
    """Select ``target_size`` items (with multiplicity) balanced over a cluster hierarchy.

    Args:
        levels: per level, an object with ``offsets`` (k_l+1,) and ``sorted_clusters`` (n_l,)
            (CSR of level l's clusters over level l-1's clusters; level 1 over items, members
            sorted by distance to the centroid), e.g. :class:`pipeline.kmeans.LevelResult`.
        target_size: total selection size, counting repeats.
        strategy: the selection objective inside a level-1 cluster (a key of ``OBJECTIVES``).
        multiplier: capacity factor; 1 selects every item at most once.
        rng: seed or generator (remainder draws, random and typical objectives).
        x: (N, D) embeddings by item id, for the objectives that need them (typical, coverage).
        settings: keyword settings of the objective (``conf/sampling/default.yaml``, e.g. ``typical``).
    """
    if strategy not in OBJECTIVES:
        raise ValueError(f"sampling strategy must be one of {tuple(OBJECTIVES)}, got {strategy!r}")
    objective = OBJECTIVES[strategy]
    if objective.needs_embeddings and x is None:
        raise ValueError(f"sampling strategy {strategy!r} needs the embeddings (x)")
    if int(multiplier) != multiplier or multiplier < 1:
        raise ValueError(f"multiplier must be a positive integer, got {multiplier!r}")
    if not levels:
        raise ValueError("need at least one level of clusters")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    capacity = [multiplier * c for c in points_per_cluster(levels)]
    total = int(capacity[0].sum())
    if not 0 <= target_size <= total:
        raise ValueError(f"target_size={target_size} must be in [0, {total}] (points x multiplier)")

    budgets = [np.zeros(0, dtype=np.int64)] * len(levels)
    budgets[-1] = water_filling(capacity[-1], target_size, rng)
    for lv in range(len(levels) - 1, 0, -1):
        members = levels[lv].sorted_clusters
        child = segmented_water_filling(capacity[lv - 1][members], levels[lv].offsets, budgets[lv], rng)
        budgets[lv - 1] = np.zeros(len(capacity[lv - 1]), dtype=np.int64)
        budgets[lv - 1][members] = child

    offsets, items = levels[0].offsets, levels[0].sorted_clusters
    sizes = np.diff(offsets)
    cluster = np.repeat(np.arange(len(sizes)), sizes)  # cluster of every CSR position
    rank = objective.rank(
        x if objective.needs_embeddings else None, offsets, items, budgets[0], rng, **(settings or {})
    )
    b, n = budgets[0][cluster], sizes[cluster]
    mult = b // n + (rank < b % n)
    keep = mult > 0
    return BalancedSelection(items[keep].astype(np.int64), mult[keep].astype(np.int32), budgets)
