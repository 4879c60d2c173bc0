"""Copy groups without chaining: an image is removed only as a verified copy of the image kept in its place.

Verified pairs form components; in each, the image first in keep priority is kept and every other
member is verified against it directly (one pair per member: the candidate search need not have
proposed that pair, so groups larger than the search's ``neighbours`` are still found whole).
Members that are not copies of it (a component can join two pictures through a member that
resembles both) are grouped again among themselves by greedy leaders over their own verified
pairs (:func:`pipeline.dedup.semantic.leaders_from_pairs`), where again a removed image is linked
directly to its kept one. So ``a ~ b``, ``b ~ c`` and ``a !~ c`` never remove ``c`` for ``a``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.dedup.semantic import leaders_from_pairs


def keeper_groups(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    score: np.ndarray,
    priority: np.ndarray,
    verify: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Groups of ``n`` images from their verified pairs.

    Args:
        i, j, score: (P,) verified pairs and their recorded distance (lower is closer).
        priority: (n,) keep priority, lower first.
        verify: ``(a, b) -> (linked (Q,) bool, score (Q,))`` for new pairs.

    Returns:
        (kept_of (n,) int64: itself when kept; score (n,) of each removed image to its kept one, 0 when kept).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    kept_of, dist = np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.float64)
    if not len(i):
        return kept_of, dist
    order = np.argsort(priority, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    _, comp = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    best = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(best, comp, rank)
    keeper = order[best[comp]]
    in_group = np.bincount(comp, minlength=len(best))[comp] > 1
    members = np.flatnonzero(in_group & (keeper != np.arange(n)))
    # pairs already verified against the keeper, else verified now
    lo, hi = np.minimum(members, keeper[members]), np.maximum(members, keeper[members])
    known_key = np.minimum(i, j) * n + np.maximum(i, j)
    srt = np.argsort(known_key)
    pos = np.clip(np.searchsorted(known_key[srt], lo * n + hi), 0, len(srt) - 1)
    known = known_key[srt][pos] == lo * n + hi
    linked = known.copy()
    member_score = np.where(known, score[srt][pos], np.inf)
    ask = np.flatnonzero(~known)
    if len(ask):
        ok, s = verify(members[ask], keeper[members[ask]])
        linked[ask], member_score[ask] = ok, s
    kept_of[members[linked]], dist[members[linked]] = keeper[members[linked]], member_score[linked]
    # the rest: greedy leaders over their own verified pairs, in priority order
    rest = np.zeros(n, dtype=bool)
    rest[members[~linked]] = True
    pair = rest[i] & rest[j]
    if pair.any():
        a, b, s = rank[i[pair]], rank[j[pair]], score[pair]
        lead, sim = leaders_from_pairs(n, np.minimum(a, b), np.maximum(a, b), -s.astype(np.float32))
        moved = np.flatnonzero(lead != np.arange(n))  # in rank space
        kept_of[order[moved]], dist[order[moved]] = order[lead[moved]], -sim[moved]
    return kept_of, dist
