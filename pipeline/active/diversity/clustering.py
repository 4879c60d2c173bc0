"""``clustering``: k-means (``pipeline.kmeans.algorithm.kmeans``) on the candidates; cluster ``c`` of size
``m_c`` gets a quota ``q_c`` from the largest-remainder rounding of ``k m_c / M`` (so ``q_c <= m_c`` and
``sum q_c = k``), filled with its most uncertain members (``n_clusters`` clusters).
"""

from __future__ import annotations

import numpy as np

from pipeline.active.diversity import DiversitySettings, register
from pipeline.active.diversity.iterative_proximity import unit_rows
from pipeline.active.strategies.base import top_k


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


def clustering(x: np.ndarray, u: np.ndarray, k: int, n_clusters: int, seed: int, n_iters: int = 10) -> np.ndarray:
    """k-means on the candidates, quota per cluster, most uncertain first (module docstring)."""
    from pipeline.kmeans.algorithm import kmeans

    u = np.asarray(u, dtype=np.float64)
    n_clusters = int(min(max(1, n_clusters), len(u)))
    _, assign, _ = kmeans(unit_rows(x), n_clusters, n_iters, init="kmeans++", metric="l2", seed=seed)
    sizes = np.bincount(assign, minlength=n_clusters)
    quotas = largest_remainder_quotas(sizes, k)
    # Rank inside each cluster by priority: sort by (cluster, -u, position).
    order = np.lexsort((np.arange(len(u)), -u, assign))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank_in_cluster = np.empty(len(u), dtype=np.int64)
    rank_in_cluster[order] = np.arange(len(u)) - np.repeat(starts, sizes)
    chosen = np.flatnonzero(rank_in_cluster < quotas[assign])
    return chosen[top_k(u[chosen], len(chosen))]


@register("clustering")
def clustering_method(
    x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None, seed: int, cfg: DiversitySettings
) -> np.ndarray:
    return clustering(x, u, k, n_clusters=cfg.n_clusters, seed=seed)
