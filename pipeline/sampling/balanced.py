"""Hierarchical balanced sampling over a cluster hierarchy (Vo et al. 2024, Sec. 4).

The budget is allocated top-down: water-filling over the top-level clusters by the number of
points under each, then, inside every cluster, water-filling of its budget over its children,
down to the pick level (level 1 by default), where each cluster's points are taken in the order of
a selection objective (:mod:`pipeline.sampling.objectives`: ``closest`` to the centroid first,
``random``, ``typical`` or ``coverage``). With ``allocation_power`` g > 0 a child's share grows as
size^g (:mod:`pipeline.sampling.water_filling`); with ``pick_level="budget"`` the objective picks
inside ``target_size`` clusters of a fresh k-means instead (:mod:`pipeline.sampling.budget_clusters`,
TypiClust).

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
    """``indices`` (unique level-1 item ids), ``multiplicity`` per index (sum = target),
    ``budgets[l]``: the count allocated to every cluster of level l+1, and with ``pick_level="budget"``
    ``split_level``: the level whose clusters held the budget-sized k-means (0: the whole pool)."""

    indices: np.ndarray
    multiplicity: np.ndarray
    budgets: list[np.ndarray]
    split_level: int | None = None


def points_per_cluster(levels: Sequence) -> list[np.ndarray]:
    """Number of level-1 items under every cluster of every level (from the CSR offsets)."""
    counts = [np.diff(levels[0].offsets)]
    for lv in levels[1:]:
        cs = np.concatenate([[0], np.cumsum(counts[-1][lv.sorted_clusters])])
        counts.append(cs[lv.offsets[1:]] - cs[lv.offsets[:-1]])
    return counts


def items_per_cluster(levels: Sequence, level: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets (k_level+1,), items (N,)) of the level-1 items under every cluster of ``level``.

    Composed down the hierarchy: a cluster's items are those of its children in the children's
    (distance-sorted) order, so position 0 is the closest item of the closest child (level 1: the CSR
    of ``levels[0]`` itself).
    """
    offsets, items = levels[0].offsets, levels[0].sorted_clusters
    for lv in levels[1:level]:
        child = lv.sorted_clusters
        lengths = np.diff(offsets)[child]
        starts = np.cumsum(lengths) - lengths
        items = items[np.repeat(offsets[child] - starts, lengths) + np.arange(int(lengths.sum()))]
        offsets = np.concatenate([[0], np.cumsum(lengths)])[lv.offsets]
    return offsets, items


def hierarchical_balanced_sampling(
    levels: Sequence,
    target_size: int,
    *,
    strategy: str,
    multiplier: int,
    pick_level: int | str,
    allocation_power: float,
    rng: np.random.Generator | int = 0,
    x: np.ndarray | None = None,
    settings: dict | None = None,
    budget_clusters: dict | None = None,
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
        pick_level: the level whose clusters the objective picks inside (1 = level-1 clusters); the
            budget is water-filled down to it, and its clusters' items are ranked as one group each.
            ``"budget"``: instead, ``target_size`` clusters of a fresh k-means of ``x``
            (:mod:`pipeline.sampling.budget_clusters`, TypiClust), one pick each; see ``budget_clusters``.
        allocation_power: g of :mod:`pipeline.sampling.water_filling` at every level (0 = flat
            water-filling, Vo et al.; 1 = proportional to the points under each cluster).
        budget_clusters: with ``pick_level="budget"``: ``split`` m (or None), ``n_iters``,
            ``max_points_per_centroid`` and ``max_whole_pool`` (``sample.budget_kmeans``). The budget is
            first water-filled down to the finest level l with ``k_l <= target_size / m`` clusters
            (:func:`split_level`), then each of its clusters c runs a k-means with k = b_c on its members
            (:func:`pipeline.sampling.budget_clusters.group_budget_clusters`), one pick each: TypiClust
            that keeps the hierarchy's balance. No such level, or m None: one k-means of the whole pool
            (above ``max_whole_pool`` picks: the top level instead, to keep the cost linear in N).
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
    by_budget = pick_level == "budget"
    if not by_budget and not (isinstance(pick_level, int) and 1 <= pick_level <= len(levels)):
        raise ValueError(f"pick_level must be 'budget' or in [1, {len(levels)}], got {pick_level!r}")
    if by_budget and (x is None or multiplier != 1):
        raise ValueError("pick_level='budget' needs the embeddings (x) and multiplier 1")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    capacity = [multiplier * c for c in points_per_cluster(levels)]
    total = int(capacity[0].sum())
    if not 0 <= target_size <= total:
        raise ValueError(f"target_size={target_size} must be in [0, {total}] (points x multiplier)")

    budgets = [np.zeros(0, dtype=np.int64)] * len(levels)
    split = 0
    if by_budget:
        if budget_clusters is None:
            raise ValueError("pick_level='budget' needs the budget_clusters settings (split, n_iters)")
        sizes = [len(c) for c in capacity]
        split = split_level(sizes, target_size, budget_clusters["split"], int(budget_clusters["max_whole_pool"]))
    descend_to = split if by_budget else pick_level  # 0: no level (one k-means of the whole pool)
    if descend_to:
        budgets[-1] = water_filling(capacity[-1], target_size, rng, allocation_power)
    for lv in range(len(levels) - 1, descend_to - 1, -1) if descend_to else ():
        members = levels[lv].sorted_clusters
        child = segmented_water_filling(
            capacity[lv - 1][members], levels[lv].offsets, budgets[lv], rng, allocation_power
        )
        budgets[lv - 1] = np.zeros(len(capacity[lv - 1]), dtype=np.int64)
        budgets[lv - 1][members] = child

    if by_budget:
        offsets, items, pick_budgets = _budget_clusters(levels, split, budgets, x, target_size, rng, budget_clusters)
        pick_level = len(levels) + 1  # every level's budget is counted from the picks below
    else:
        offsets, items = items_per_cluster(levels, pick_level)
        pick_budgets = budgets[pick_level - 1]
    sizes = np.diff(offsets)
    cluster = np.repeat(np.arange(len(sizes)), sizes)  # cluster of every CSR position
    rank = objective.rank(
        x if objective.needs_embeddings else None, offsets, items, pick_budgets, rng, **(settings or {})
    )
    b, n = pick_budgets[cluster], sizes[cluster]
    mult = b // n + (rank < b % n)
    keep = mult > 0
    indices, mult = items[keep].astype(np.int64), mult[keep].astype(np.int32)
    cluster = indices
    for lv in range(pick_level - 1):  # the levels below pick_level: what the picks gave each cluster
        cluster = levels[lv].assignments[cluster]
        budgets[lv] = np.bincount(cluster, weights=mult, minlength=len(capacity[lv])).astype(np.int64)
    return BalancedSelection(indices, mult, budgets, split if by_budget else None)


def split_level(n_clusters: Sequence[int], target_size: int, split: float | None, max_whole_pool: int) -> int:
    """The finest level l (1-based) whose cluster count ``k_l <= target_size / split`` (every cluster can
    get ~``split`` picks). When no level fits: 0 (one k-means of the whole pool, cost ~ N B D) while
    ``target_size <= max_whole_pool``, else the top level (cost ~ N (B / k_top) D). ``split`` None: 0."""
    if split is None:
        return 0
    if not float(split) > 0:
        raise ValueError(f"budget split must be > 0 or None, got {split!r}")
    fits = [lv for lv, k in enumerate(n_clusters, start=1) if k * float(split) <= target_size]
    return fits[0] if fits else (0 if target_size <= max_whole_pool else len(n_clusters))


def _budget_clusters(
    levels: Sequence,
    split: int,
    budgets: list[np.ndarray],
    x: np.ndarray,
    target_size: int,
    rng: np.random.Generator,
    cfg: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (offsets, items) of the budget-sized clusters and the picks of each (one, or more where a
    cluster came out empty): inside the clusters of level ``split`` by their budgets, or the whole pool."""
    from pipeline.sampling.budget_clusters import budget_clusters, group_budget_clusters

    seed = int(rng.integers(2**31))
    if split == 0:
        offsets, items = budget_clusters(
            x,
            max(target_size, 1),
            seed,
            n_iters=int(cfg["n_iters"]),
            max_points_per_centroid=int(cfg["max_points_per_centroid"]),
        )
        return offsets, items, water_filling(np.diff(offsets), target_size, rng)
    g_offsets, g_items = items_per_cluster(levels, split)
    g_budget = budgets[split - 1]
    offsets, items, sub_group = group_budget_clusters(
        x, g_offsets, g_items, g_budget, seed, n_iters=int(cfg["n_iters"])
    )
    c_off = np.concatenate([[0], np.cumsum(np.bincount(sub_group, minlength=len(g_budget)))])
    return offsets, items, segmented_water_filling(np.diff(offsets), c_off, g_budget, rng)
