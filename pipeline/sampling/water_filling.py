"""Water-filling allocation of a sample budget over clusters (vectorised, many groups at once).

Given capacities ``s_i`` and a budget ``T <= sum_i s_i``, the balanced allocation is::

    x* = max { x in N : f(x) = sum_i min(x, s_i) <= T }
    n_i = min(x*, s_i) + [i in R],   R: T - f(x*) clusters drawn uniformly from { i : s_i > x* }

so small clusters are taken whole and every larger cluster gets the same count x* (or x* + 1).
``f`` is non-decreasing, so x* is found by a bisection run for all groups simultaneously.

With a ``power`` g > 0 the level is a share of each cluster's size raised to g::

    n_i = min(s_i, floor(l* s_i^g)) + [i in R],   l* = max { l : sum_i min(s_i, floor(l s_i^g)) <= T }

g = 0 is the flat allocation above, g = 1 the proportional one (what uniform sampling gives in
expectation); the remainder goes to the clusters with the largest fractional share, ties drawn.
"""

from __future__ import annotations

import numpy as np


def segmented_water_filling(
    sizes: np.ndarray, offsets: np.ndarray, targets: np.ndarray, rng: np.random.Generator, power: float = 0.0
) -> np.ndarray:
    """Water-fill ``targets[g]`` over the items ``offsets[g]:offsets[g+1]`` of every group g.

    Args:
        sizes: (n,) non-negative integer capacities, grouped contiguously.
        offsets: (G+1,) CSR offsets of the groups (``offsets[0] = 0``, ``offsets[-1] = n``).
        targets: (G,) budgets, ``0 <= targets[g] <= sum of the group's sizes``.
        rng: draws which above-cap items receive the remainder.
        power: g of the module doc (0 = flat water-filling, 1 = proportional to size).

    Returns:
        (n,) int64 counts with ``counts <= sizes`` and per-group sums equal to ``targets``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    n_groups = len(offsets) - 1
    if targets.shape != (n_groups,):
        raise ValueError(f"targets must have one entry per group ({n_groups}), got shape {targets.shape}")
    if (sizes < 0).any() or (targets < 0).any():
        raise ValueError("sizes and targets must be non-negative")
    group = np.repeat(np.arange(n_groups), np.diff(offsets))
    totals = np.bincount(group, weights=sizes, minlength=n_groups).astype(np.int64)
    if (targets > totals).any():
        g = int(np.argmax(targets > totals))
        raise ValueError(f"budget {targets[g]} exceeds the {totals[g]} items available in group {g}")
    if power < 0:
        raise ValueError(f"allocation power must be >= 0, got {power}")
    weight = sizes.astype(np.float64) ** power if power else np.ones(len(sizes))
    top = np.zeros(n_groups)
    np.maximum.at(top, group, np.where(sizes > 0, sizes / np.maximum(weight, 1e-300), 0.0))
    lo, hi = np.zeros(n_groups), np.ceil(top)
    # invariant: f(lo) <= T, answer in [lo, hi]; flat: integer levels (exact), else 64 halvings
    for _ in range(64 if power else 0):
        mid = 0.5 * (lo + hi)
        ok = np.bincount(group, weights=np.minimum(np.floor(mid[group] * weight), sizes), minlength=n_groups) <= targets
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    while not power and (lo < hi).any():
        mid = np.floor((lo + hi + 1) / 2)
        ok = np.bincount(group, weights=np.minimum(mid[group], sizes), minlength=n_groups) <= targets
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid - 1)
    share = lo[group] * weight
    counts = np.minimum(np.floor(share), sizes).astype(np.int64)
    remainder = targets - np.bincount(group, weights=counts, minlength=n_groups).astype(np.int64)
    above = sizes > counts
    frac = np.where(above, share - np.floor(share), 0.0)
    order = np.lexsort((rng.random(len(sizes)), -frac, ~above, group))  # per group: above-cap, largest share, random
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[order] = np.arange(len(sizes)) - offsets[group[order]]
    counts += (above & (rank < remainder[group])).astype(np.int64)
    return counts


def water_filling(sizes: np.ndarray, target: int, rng: np.random.Generator, power: float = 0.0) -> np.ndarray:
    """Balanced counts for one group: ``sum(counts) == target``, ``counts <= sizes`` (see module doc)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return segmented_water_filling(sizes, np.array([0, len(sizes)]), np.array([target]), rng, power)
