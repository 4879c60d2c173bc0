"""Duplicate grouping: exact (equal hashes), greedy leaders from linked pairs, and semantic redundancy
(cosine >= 1 - eps inside k-means clusters).

Semantic rule (greedy leader clustering, per cluster, in keep-priority order): a point is kept
unless a point *kept before it* has cosine similarity ``>= 1 - eps``; a removed point is a
duplicate of its most similar kept point. So every kept pair has similarity ``< 1 - eps`` and every
removed point is within ``eps`` of its ``kept_id`` (no chains of removals through removed points,
unlike thresholding the max similarity to all earlier points as SemDeDup does).

Keep priority (shared with the other kinds): ``largest`` (most pixels first), ``centroid`` (closest
to the cluster centroid first, the most typical copy), ``first`` (input order) or ``random`` (seeded).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def exact_duplicates(hashes: list[str | None], priority: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose hash equals an earlier row's (by ``priority``, lower first); None never matches.

    Returns:
        (duplicate row indices, their kept row indices) int64.
    """
    order = np.argsort(priority, kind="stable")
    first: dict[str, int] = {}
    dup, kept = [], []
    for i in order:
        h = hashes[i]
        if h is None:
            continue
        j = first.setdefault(h, int(i))
        if j != i:
            dup.append(int(i))
            kept.append(j)
    return np.asarray(dup, dtype=np.int64), np.asarray(kept, dtype=np.int64)


def _largest_first(n: int, centroid_distance: np.ndarray | None, pixels: np.ndarray | None, seed: int) -> np.ndarray:
    """Most ``pixels`` first, then input order (input order alone without pixel counts)."""
    if pixels is None:
        return np.arange(n, dtype=np.float64)
    order = np.lexsort((np.arange(n), -np.asarray(pixels, dtype=np.int64)))
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(n)
    return ranks


def _closest_to_centroid(
    n: int, centroid_distance: np.ndarray | None, pixels: np.ndarray | None, seed: int
) -> np.ndarray:
    if centroid_distance is None:
        raise ValueError("keep='centroid' needs the distance of each point to its centroid")
    return np.asarray(centroid_distance, dtype=np.float64)


def _input_order(n: int, centroid_distance: np.ndarray | None, pixels: np.ndarray | None, seed: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


def _seeded_random(n: int, centroid_distance: np.ndarray | None, pixels: np.ndarray | None, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n).astype(np.float64)


# dedup.keep -> (n, centroid_distance, pixels, seed) -> (N,) ranks (names checked by pipeline/dedup/config.py)
KEEP_PRIORITY: dict[str, Callable[[int, np.ndarray | None, np.ndarray | None, int], np.ndarray]] = {
    "largest": _largest_first,
    "centroid": _closest_to_centroid,
    "first": _input_order,
    "random": _seeded_random,
}


def keep_priority(
    n: int,
    rule: str,
    *,
    centroid_distance: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    seed: int,
) -> np.ndarray:
    """(N,) float ranks under ``rule`` (a name in :data:`KEEP_PRIORITY`): lower is kept first. ``largest``:
    most ``pixels`` first, then input order (input order alone without pixel counts); ``random``: seeded."""
    if rule not in KEEP_PRIORITY:
        raise ValueError(f"keep must be one of {tuple(KEEP_PRIORITY)}, got {rule!r}")
    return KEEP_PRIORITY[rule](n, centroid_distance, pixels, seed)


def _similar_pairs(xn: torch.Tensor, threshold: float, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of rows of ``xn`` with xn_i . xn_j >= threshold, by blocked GEMM."""
    rows, cols, sims = [], [], []
    n = xn.shape[0]
    for a in range(0, n, block):
        s = xn[a : a + block] @ xn[a:].T  # only j >= a: the upper triangle
        i, j = torch.nonzero(s >= threshold, as_tuple=True)
        keep = j > i
        i, j = i[keep], j[keep]
        rows.append((i + a).numpy())
        cols.append((j + a).numpy())
        sims.append(s[i, j].numpy())
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)


def leaders_from_pairs(n: int, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy leader clustering of ``n`` rows in priority order (row 0 first) from their linked pairs.

    Args:
        i, j: (P,) int64 linked pairs with ``i < j`` (``i`` comes first in priority order).
        s: (P,) similarity of each pair (higher is more alike).

    Returns:
        (kept_of (n,) int64: own index when kept, else the index of its most similar kept, earlier
         linked row; similarity (n,) float32 to that row, 1 for kept rows).
    """
    kept_of = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, dtype=np.float32)
    if not len(i):
        return kept_of, similarity
    order = np.lexsort((j, i))
    i, j, s = i[order], j[order], s[order]
    starts = np.searchsorted(i, np.arange(n + 1))
    removed = np.zeros(n, dtype=bool)
    for row in np.unique(i):  # priority order; only rows with linked later rows matter
        if removed[row]:
            continue
        removed[j[starts[row] : starts[row + 1]]] = True
    # Each removed row joins its most similar kept, earlier row.
    valid = ~removed[i] & removed[j]
    i, j, s = i[valid], j[valid], s[valid]
    best = np.lexsort((-s, j))
    first = np.unique(j[best], return_index=True)[1]
    kept_of[j[best][first]] = i[best][first]
    similarity[j[best][first]] = s[best][first]
    return kept_of, similarity


def leader_groups(xn: np.ndarray, threshold: float, *, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy leader clustering of rows already sorted by keep priority (see module doc).

    Args:
        xn: (n, D) L2-normalised rows in priority order.
        threshold: similarity ``1 - eps``.

    Returns:
        (kept_of, similarity) as :func:`leaders_from_pairs`.
    """
    n = len(xn)
    if n < 2:
        return leaders_from_pairs(n, *(np.zeros(0, np.int64),) * 2, np.zeros(0, np.float32))
    return leaders_from_pairs(
        n, *_similar_pairs(torch.as_tensor(np.ascontiguousarray(xn, dtype=np.float32)), threshold, block)
    )


def semantic_duplicates(
    x: np.ndarray,
    assignments: np.ndarray,
    eps: float,
    priority: np.ndarray,
    *,
    block: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster leader grouping of (N, D) ``x`` at cosine >= 1 - eps.

    Args:
        assignments: (N,) cluster ids; pairs are only compared inside a cluster.
        priority: (N,) keep ranks (lower kept first), see :func:`keep_priority`.

    Returns:
        (kept_of (N,) int64 row index of the kept representative (itself when kept),
         similarity (N,) float32 cosine to it).
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps}")
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if assignments.shape != (n,) or priority.shape != (n,):
        raise ValueError("assignments and priority must be (N,)")
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    order = np.lexsort((np.arange(n), priority, assignments))  # by cluster, then priority
    bounds = np.flatnonzero(np.diff(assignments[order])) + 1
    kept_of = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, dtype=np.float32)
    for members in np.split(order, bounds):
        local_kept, local_sim = leader_groups(xn[members], 1.0 - eps, block=block)
        kept_of[members] = members[local_kept]
        similarity[members] = local_sim
    return kept_of, similarity
