"""``typical``: the densest points of each level-1 cluster first (TypiClust, Hacohen et al., ICML 2022).

Typicality of point i in cluster c, from its k nearest neighbours among the cluster's
reference members R_c (up to ``max_reference`` of them, drawn at random, so the cost is
O(N * max_reference * D), linear in N)::

    typicality(i) = 1 / ( mean_{j in kNN(i, R_c \\ {i})} ||x_i - x_j|| + eps ),   k_eff = min(k, |R_c \\ {i}|)

Clusters are contiguous in the CSR order, so rows are processed in blocks against the reference
members of the clusters the block touches (at most ``block_rows + 2 * max_reference`` columns).
A cluster with one point ranks it first.
"""

from __future__ import annotations

import numpy as np

from pipeline.sampling.objectives.base import Objective, cluster_of_positions, rank_by_score


def typicality(
    x: np.ndarray,
    offsets: np.ndarray,
    items: np.ndarray,
    *,
    k: int,
    max_reference: int,
    rng: np.random.Generator,
    block_rows: int = 256,
) -> np.ndarray:
    """(n,) float64 typicality of every CSR position (inf for a point alone in its cluster)."""
    import torch

    n = len(items)
    if k < 1 or max_reference < 2:
        raise ValueError(f"typical needs k >= 1 and max_reference >= 2, got {k} and {max_reference}")
    cluster = cluster_of_positions(offsets)
    is_ref = rank_by_score(rng.random(n), offsets) < max_reference
    ref_pos = np.flatnonzero(is_ref)
    ref_off = np.concatenate([[0], np.cumsum(np.minimum(np.diff(offsets), max_reference))])
    xs = torch.as_tensor(np.ascontiguousarray(x[items], dtype=np.float64))  # with the rounding below: thread-proof
    refs, ref_cluster, ref_pos_t = xs[ref_pos], torch.as_tensor(cluster[ref_pos]), torch.as_tensor(ref_pos)
    cluster_t = torch.as_tensor(cluster)
    out = np.empty(n, dtype=np.float64)
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        s, e = int(ref_off[cluster[a]]), int(ref_off[cluster[b - 1] + 1])
        d = torch.cdist(xs[a:b], refs[s:e])
        other = (cluster_t[a:b, None] != ref_cluster[None, s:e]) | (torch.arange(a, b)[:, None] == ref_pos_t[None, s:e])
        d = d.masked_fill(other, float("inf"))
        near = d.topk(min(k, e - s), dim=1, largest=False).values
        found = torch.isfinite(near)
        mean = torch.where(found, near, torch.zeros_like(near)).sum(1) / found.sum(1).clamp(min=1)
        mean = torch.round(mean, decimals=9)  # near-duplicates tie exactly (then CSR order), whatever the threads
        out[a:b] = torch.where(found.any(1), 1.0 / (mean + 1e-12), torch.inf).numpy()
    return out


def typical_rank(
    x: np.ndarray,
    offsets: np.ndarray,
    items: np.ndarray,
    budgets: np.ndarray,
    rng: np.random.Generator,
    *,
    k: int | None = None,
    max_reference: int | None = None,
    **_,
) -> np.ndarray:
    """rank by descending typicality (module doc); ``k`` / ``max_reference`` not given (callers without the
    sample settings, e.g. ``strata coreset``): ``sample.typical`` of ``conf/sampling/default.yaml``."""
    if k is None or max_reference is None:
        from pipeline.config import load_group

        conf = load_group("sampling/default")["typical"]
        k = conf["k"] if k is None else k
        max_reference = conf["max_reference"] if max_reference is None else max_reference
    return rank_by_score(typicality(x, offsets, items, k=k, max_reference=max_reference, rng=rng), offsets)


TYPICAL = Objective("typical", typical_rank, True, "densest points of each cluster (highest kNN density) first")
