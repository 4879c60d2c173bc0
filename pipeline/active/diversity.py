"""Diversity on top of a strategy: choose ``k`` of the top-priority candidates, not all alike.

Every method takes candidate embeddings ``x`` (M, D), their priorities ``u`` (M,) and returns
``k`` distinct positions into the candidates, in pick order.

- ``none``: the ``k`` highest priorities.
- ``iterative_proximity``: picks in blocks of ``block_size``; before each block the score is

      a_i = u_hat_i - lambda * max(0, max_{j picked} cos(x_i, x_j)),
      u_hat = (u - min u) / (max u - min u),

  so candidates close to an already-picked image drop down.
- ``clustering``: k-means (``pipeline.kmeans.kmeans``) on the candidates; cluster ``c`` of size
  ``m_c`` gets a quota ``q_c`` from the largest-remainder rounding of ``k m_c / M`` (so
  ``q_c <= m_c`` and ``sum q_c = k``), filled with its most uncertain members.
- ``coreset``: k-center greedy (``pipeline.coreset.kcenter.k_center_greedy``, cosine distance)
  among the candidates, counting the already-labeled images as centres when given.
"""

from __future__ import annotations

import numpy as np

from pipeline.active.strategies import top_k

DIVERSITY = ("none", "iterative_proximity", "clustering", "coreset")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def iterative_proximity(x: np.ndarray, u: np.ndarray, k: int, block_size: int = 8, penalty: float = 1.0) -> np.ndarray:
    """Block-wise picks with the proximity penalty of the module docstring."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    xn = _unit_rows(x)
    u = np.asarray(u, dtype=np.float64)
    span = u.max() - u.min() if len(u) else 0.0
    u_hat = (u - u.min()) / span if span > 0 else np.zeros_like(u)
    closeness = np.zeros(len(u))
    free = np.ones(len(u), dtype=bool)
    picks: list[np.ndarray] = []
    taken = 0
    while taken < k:
        adjusted = np.where(free, u_hat - penalty * closeness, -np.inf)
        block = top_k(adjusted, min(block_size, k - taken))
        picks.append(block)
        free[block] = False
        taken += len(block)
        closeness = np.maximum(closeness, (xn @ xn[block].T).max(axis=1))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def largest_remainder_quotas(sizes: np.ndarray, k: int) -> np.ndarray:
    """Integer quotas ``q_c`` with ``sum q = k`` proportional to ``sizes`` (largest remainder).

    ``q_c = floor(k m_c / M)`` plus one for the ``k - sum floor`` largest fractional parts (ties
    to the lower cluster index); since ``k <= M``, ``q_c <= m_c``.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    if not 0 <= k <= total:
        raise ValueError(f"k={k} must be in [0, {total}]")
    exact = k * sizes / max(total, 1)
    quotas = np.floor(exact).astype(np.int64)
    rest = k - int(quotas.sum())
    if rest:
        quotas[top_k(exact - quotas, rest)] += 1
    return quotas


def clustering(
    x: np.ndarray, u: np.ndarray, k: int, n_clusters: int = 16, seed: int = 0, n_iters: int = 10
) -> np.ndarray:
    """k-means on the candidates, quota per cluster, most uncertain first (module docstring)."""
    from pipeline.kmeans.algorithm import kmeans

    u = np.asarray(u, dtype=np.float64)
    n_clusters = int(min(max(1, n_clusters), len(u)))
    _, assign, _ = kmeans(_unit_rows(x), n_clusters, n_iters, init="kmeans++", metric="l2", seed=seed)
    sizes = np.bincount(assign, minlength=n_clusters)
    quotas = largest_remainder_quotas(sizes, k)
    # Rank inside each cluster by priority: sort by (cluster, -u, position).
    order = np.lexsort((np.arange(len(u)), -u, assign))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank_in_cluster = np.empty(len(u), dtype=np.int64)
    rank_in_cluster[order] = np.arange(len(u)) - np.repeat(starts, sizes)
    chosen = np.flatnonzero(rank_in_cluster < quotas[assign])
    return chosen[top_k(u[chosen], len(chosen))]


def coreset(x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None = None) -> np.ndarray:
    """k-center greedy among the candidates; starts at the top priority when nothing is labeled."""
    from pipeline.coreset.kcenter import k_center_greedy

    m = len(u)
    if labeled_x is not None and len(labeled_x):
        allx = np.concatenate([np.asarray(x, np.float32), np.asarray(labeled_x, np.float32)])
        picks, _ = k_center_greedy(allx, k, already_selected=np.arange(m, len(allx)), metric="cosine")
    else:
        picks, _ = k_center_greedy(np.asarray(x, np.float32), k, start=int(np.argmax(u)), metric="cosine")
    return picks


def diverse_select(
    method: str,
    x: np.ndarray,
    u: np.ndarray,
    k: int,
    *,
    labeled_x: np.ndarray | None = None,
    seed: int = 0,
    block_size: int = 8,
    penalty: float = 1.0,
    n_clusters: int = 16,
) -> np.ndarray:
    """``k`` distinct candidate positions chosen by ``method`` (one of :data:`DIVERSITY`)."""
    if len(x) != len(u):
        raise ValueError(f"{len(x)} candidate embeddings but {len(u)} priorities")
    k = int(min(k, len(u)))
    if method == "none":
        return top_k(u, k)
    if method == "iterative_proximity":
        return iterative_proximity(x, u, k, block_size=block_size, penalty=penalty)
    if method == "clustering":
        return clustering(x, u, k, n_clusters=n_clusters, seed=seed)
    if method == "coreset":
        return coreset(x, u, k, labeled_x)
    raise ValueError(f"unknown diversity {method!r}; choose one of {DIVERSITY}")
