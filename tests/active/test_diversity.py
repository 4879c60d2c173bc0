"""Diversity methods against hand-worked cases and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.active.config import ActiveConfig
from pipeline.active.diversity import diverse_select
from pipeline.active.diversity.clustering import largest_remainder_quotas
from pipeline.active.diversity.coreset import coreset
from pipeline.active.diversity.iterative_proximity import iterative_proximity


def test_iterative_proximity_by_hand() -> None:
    # 0 and 1 are the same direction, 2 is orthogonal. Priorities 1.0, 0.9, 0.5 -> u_hat 1, 0.8, 0.
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    u = np.array([1.0, 0.9, 0.5])
    # Block 1 picks 0; then a = [-, 0.8 - 1.0, 0.0 - 0.0] -> 2 beats 1.
    assert iterative_proximity(x, u, 2, block_size=1, penalty=1.0).tolist() == [0, 2]
    # Without penalty it is the plain top-2; with one block of 2 no penalty applies either.
    assert iterative_proximity(x, u, 2, block_size=1, penalty=0.0).tolist() == [0, 1]
    assert iterative_proximity(x, u, 2, block_size=2, penalty=1.0).tolist() == [0, 1]


def test_largest_remainder_by_hand() -> None:
    # k * m / M = 5 * [5, 3, 2] / 10 = [2.5, 1.5, 1.0] -> floors [2, 1, 1], one left for the first .5 tie
    assert largest_remainder_quotas(np.array([5, 3, 2]), 5).tolist() == [3, 1, 1]
    assert largest_remainder_quotas(np.array([1, 1, 8]), 10).tolist() == [1, 1, 8]
    with pytest.raises(ValueError):
        largest_remainder_quotas(np.array([1, 2]), 4)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12), st.data())
def test_quotas_sum_and_cap(sizes: list[int], data) -> None:
    k = data.draw(st.integers(0, sum(sizes)))
    q = largest_remainder_quotas(np.array(sizes), k)
    assert q.sum() == k and (q <= np.array(sizes)).all() and (q >= 0).all()


def test_clustering_takes_quota_from_each_cluster() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    sizes = [40, 20, 20]
    x = np.concatenate([c + 0.1 * rng.normal(size=(m, 2)) for c, m in zip(centers, sizes)])
    u = rng.random(len(x))
    picks = diverse_select("clustering", x, u, 8, ActiveConfig.from_dict({"n_clusters": 3}), seed=0)
    owner = np.repeat([0, 1, 2], sizes)
    assert np.bincount(owner[picks], minlength=3).tolist() == [4, 2, 2]
    for c in range(3):  # inside each cluster, the most uncertain members
        members = np.flatnonzero(owner == c)
        chosen = picks[owner[picks] == c]
        assert set(chosen) == set(members[np.argsort(-u[members])[: len(chosen)]])


def _brute_force_k_center(x: np.ndarray, labeled: np.ndarray, k: int) -> float:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ln = labeled / np.linalg.norm(labeled, axis=1, keepdims=True)
    best = np.inf
    for combo in itertools.combinations(range(len(x)), k):
        centers = np.concatenate([xn[list(combo)], ln])
        best = min(best, (1 - xn @ centers.T).min(1).max())
    return best


def test_coreset_is_greedy_k_center_with_labeled_centres() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3)) + 2
    labeled = rng.normal(size=(2, 3)) + 2
    picks = coreset(x, np.zeros(9), 3, labeled_x=labeled)
    assert len(set(picks.tolist())) == 3
    # first pick = candidate farthest (cosine) from the labeled images
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ln = labeled / np.linalg.norm(labeled, axis=1, keepdims=True)
    assert picks[0] == np.argmax((1 - xn @ ln.T).min(1))
    radius = (1 - xn @ np.concatenate([xn[picks], ln]).T).min(1).max()
    assert radius <= 2 * _brute_force_k_center(x, labeled, 3) + 1e-6  # greedy k-center 2-approximation


def test_every_method_returns_k_distinct() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    u = rng.random(100)
    for method in ("none", "iterative_proximity", "clustering", "coreset"):
        picks = diverse_select(method, x, u, 17, ActiveConfig.from_dict({}), labeled_x=x[:5], seed=0)
        assert len(picks) == 17 and len(np.unique(picks)) == 17 and picks.max() < 100
    with pytest.raises(ValueError, match="unknown diversity"):
        diverse_select("dpp", x, u, 3, ActiveConfig.from_dict({}), seed=0)
