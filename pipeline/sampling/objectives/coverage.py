"""``coverage``: k-center greedy inside every level-1 cluster, all clusters in one vectorised pass.

Cluster c with n_c points and budget b_c needs ``m_c = b_c`` picks (``b_c mod n_c`` when b_c >= n_c:
whole copies need no order). The first pick is the point closest to the centroid; then, as in
:mod:`pipeline.coreset.kcenter`, the point farthest from the cluster's picks::

    s_t(c) = argmax_{i in c} min_{s in S(c)} ||x_i - x_s||,    S(c) <- S(c) + {s_t(c)}

Round t touches only the clusters with m_c > t: cost sum_c n_c * m_c * D (linear in N for a
bounded budget per cluster).
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling.objectives.base import Objective, cluster_of_positions


def coverage_rank(
    x: np.ndarray, offsets: np.ndarray, items: np.ndarray, budgets: np.ndarray, rng: np.random.Generator, **_
) -> np.ndarray:
    """rank = k-center greedy pick order inside each cluster (unpicked points rank after all picks)."""
    import torch

    sizes = np.diff(offsets)
    need = np.where(budgets >= sizes, budgets % np.maximum(sizes, 1), budgets)
    cluster = cluster_of_positions(offsets)
    rank = np.full(len(items), np.iinfo(np.int64).max // 2, dtype=np.int64)
    rank[offsets[:-1][need > 0]] = 0
    pos = np.flatnonzero(need[cluster] > 1)  # clusters needing a second pick; sorted by cluster
    if len(pos) == 0:
        return rank
    xs = torch.as_tensor(np.ascontiguousarray(x[items[pos]], dtype=np.float32))
    cl = torch.as_tensor(cluster[pos])
    first = torch.as_tensor(np.searchsorted(pos, offsets[cluster[pos]]))  # row of each cluster's first pick
    mind = (xs - xs[first]).norm(dim=1)
    mind[first] = -torch.inf
    need_t = torch.as_tensor(need)
    rows = torch.arange(len(pos))
    n_clusters = len(sizes)
    for t in range(1, int(need.max())):
        live = need_t[cl] > t
        score = torch.where(live, mind, torch.full_like(mind, -torch.inf))
        best = torch.full((n_clusters,), -torch.inf).scatter_reduce(0, cl, score, "amax")
        is_best = live & (score == best[cl]) & torch.isfinite(score)
        pick = torch.full((n_clusters,), len(pos)).scatter_reduce(0, cl[is_best], rows[is_best], "amin")
        chosen = pick[pick < len(pos)]
        rank[pos[chosen.numpy()]] = t
        center = pick[cl]
        upd = live & (center < len(pos))
        d = (xs[upd] - xs[center[upd]]).norm(dim=1)
        mind[upd] = torch.minimum(mind[upd], d)
        mind[chosen] = -torch.inf
    return rank


COVERAGE = Objective("coverage", coverage_rank, True, "k-center greedy inside each cluster (spread out)")
