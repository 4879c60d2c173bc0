"""The contract of a selection objective (one registry entry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RankFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Objective:
    """``rank(x, offsets, items, budgets, rng, **settings) -> (n,) int64`` pick order in each cluster.

    ``offsets`` (k+1,) / ``items`` (n,): level-1 CSR, members sorted by distance to their centroid;
    ``budgets`` (k,): picks per cluster (only the first ``min(b, n_c)`` ranks matter); ``x``: (N, D)
    embeddings indexed by item id when ``needs_embeddings``, else None.
    """

    name: str
    rank: RankFn
    needs_embeddings: bool
    summary: str


def cluster_of_positions(offsets: np.ndarray) -> np.ndarray:
    """(n,) level-1 cluster of every CSR position."""
    sizes = np.diff(offsets)
    return np.repeat(np.arange(len(sizes)), sizes)


def rank_by_score(score: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n,) rank of every CSR position inside its cluster by descending ``score`` (ties: CSR order)."""
    cluster = cluster_of_positions(offsets)
    order = np.lexsort((np.arange(len(score)), -score, cluster))
    rank = np.empty(len(score), dtype=np.int64)
    rank[order] = np.arange(len(score)) - offsets[cluster[order]]
    return rank
