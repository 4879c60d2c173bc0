"""The seed set: nearest neighbours of the starter image(s) plus random images.

Neighbours come from the search engineer's exact FAISS index (``pipeline.search.SearchIndex``,
cosine similarity). With several starters, a row's similarity is its best one over the starters:

    sim(i) = max_s cos(x_i, x_s),   NN = the n_neighbors rows with the largest sim(i),

excluding the starters themselves (they are labeled already) and counting every row once. The
``n_random`` rows are a uniform sample of the rest, so the seed set has exactly
``n_neighbors + n_random`` distinct rows, none of them a starter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.search.index import SearchIndex


@dataclass
class SeedSet:
    neighbors: np.ndarray  # (n_neighbors,) pool rows, most similar first
    random: np.ndarray  # (n_random,) pool rows

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([self.neighbors, self.random]).astype(np.int64)


def pool_index(x: np.ndarray, ids: list[str] | np.ndarray) -> SearchIndex:
    """Exact cosine index over the pool (``kind=flat``, inner product on L2-normalised rows)."""
    return SearchIndex.build(x, ids=[str(i) for i in ids], cfg={"kind": "flat", "metric": "ip", "normalize": True})


def seed_set(
    index: SearchIndex,
    starters: np.ndarray,
    n_neighbors: int,
    n_random: int,
    rng: np.random.Generator,
    exclude_rows: np.ndarray | None = None,
) -> SeedSet:
    """Seed rows for starter vectors ``starters`` (S, D) in a pool indexed by ``index``.

    ``exclude_rows``: pool rows never picked (the starters' own rows when they come from the pool).
    """
    starters = np.atleast_2d(np.asarray(starters, dtype=np.float32))
    n = index.n
    exclude = np.unique(np.asarray([] if exclude_rows is None else exclude_rows, dtype=np.int64))
    if n_neighbors < 0 or n_random < 0:
        raise ValueError("n_neighbors and n_random must be >= 0")
    if n_neighbors + n_random > n - len(exclude):
        raise ValueError(f"seed set of {n_neighbors} + {n_random} does not fit a pool of {n} ({len(exclude)} starters)")
    taken = np.zeros(n, dtype=bool)
    taken[exclude] = True
    neighbors = np.zeros(0, dtype=np.int64)
    if n_neighbors:
        k = min(n, n_neighbors + len(exclude))
        rows, scores = index.search_rows(starters, k)
        rows, scores = rows.reshape(-1), scores.reshape(-1)
        ok = rows >= 0
        rows, scores = rows[ok], scores[ok]
        order = np.lexsort((rows, -scores))  # best similarity first, ties by row
        rows = rows[order]
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)]  # each row once, at its best similarity
        neighbors = rows[~taken[rows]][:n_neighbors]
        if len(neighbors) < n_neighbors:
            raise RuntimeError(f"index returned {len(neighbors)} neighbours, fewer than n_neighbors={n_neighbors}")
        taken[neighbors] = True
    free = np.flatnonzero(~taken)
    random = np.sort(rng.choice(free, size=n_random, replace=False)) if n_random else np.zeros(0, dtype=np.int64)
    return SeedSet(neighbors.astype(np.int64), random.astype(np.int64))
