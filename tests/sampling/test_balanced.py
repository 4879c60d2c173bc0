"""Hierarchical balanced sampling on random hierarchies: exact size, caps, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kmeans import LevelResult, hierarchical_kmeans, sort_clusters
from pipeline.sampling import hierarchical_balanced_sampling, points_per_cluster


def random_hierarchy(rng: np.random.Generator, n: int, ks: list[int]) -> list[LevelResult]:
    """Random nested clusterings (every cluster non-empty) with random distances."""
    levels, items = [], n
    for k in ks:
        assign = np.concatenate([np.arange(k), rng.integers(k, size=items - k)])
        rng.shuffle(assign)
        dist = rng.random(items).astype(np.float32)
        levels.append(LevelResult.from_assignments(np.zeros((k, 2), np.float32), assign, dist))
        items = k
    return levels


def balanced_siblings(budget: np.ndarray, capacity: np.ndarray) -> bool:
    """Water-filling signature: some x with unsaturated budgets in {x, x+1}, saturated caps <= x+1."""
    open_ = budget < capacity
    if not open_.any():
        return True
    x = budget[open_].min()
    return bool(budget[open_].max() <= x + 1 and np.all(capacity[~open_] <= x + 1))


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 2**31),
    st.integers(60, 300),
    st.lists(st.integers(2, 12), min_size=1, max_size=3),
    st.floats(0, 1),
    st.sampled_from(["closest", "random"]),
    st.integers(1, 3),
)
def test_hierarchical_sampling_properties(seed, n, ks, frac, strategy, multiplier):
    rng = np.random.default_rng(seed)
    ks = sorted({min(k * 4**i, n // 2) for i, k in enumerate(ks)}, reverse=True)
    levels = random_hierarchy(rng, n, ks)
    target = int(frac * n * multiplier)
    sel = hierarchical_balanced_sampling(levels, target, strategy=strategy, multiplier=multiplier, rng=seed)
    assert sel.multiplicity.sum() == target
    assert len(np.unique(sel.indices)) == len(sel.indices)
    assert np.all(sel.multiplicity >= 1) and np.all(sel.multiplicity <= multiplier)
    counts = points_per_cluster(levels)
    for lv in range(len(levels)):
        budget = sel.budgets[lv]
        assert np.all(budget <= multiplier * counts[lv])
        if lv + 1 < len(levels):  # each parent's budget is water-filled over its children
            parent = levels[lv + 1]
            for c in range(len(parent.offsets) - 1):
                kids = parent.sorted_clusters[parent.offsets[c] : parent.offsets[c + 1]]
                assert budget[kids].sum() == sel.budgets[lv + 1][c]
                assert balanced_siblings(budget[kids], multiplier * counts[lv][kids])
        else:
            assert balanced_siblings(budget, multiplier * counts[lv])
    # level-1 clusters receive exactly their budget
    cluster_of = levels[0].assignments[sel.indices]
    np.testing.assert_array_equal(np.bincount(cluster_of, weights=sel.multiplicity, minlength=ks[0]), sel.budgets[0])


def test_closest_takes_the_points_nearest_to_the_centroid():
    assign = np.array([0, 0, 0, 1, 1, 1, 1])
    dist = np.array([0.3, 0.1, 0.2, 0.9, 0.4, 0.8, 0.5], dtype=np.float32)
    level = LevelResult.from_assignments(np.zeros((2, 1), np.float32), assign, dist)
    sel = hierarchical_balanced_sampling([level], 4, strategy="closest", rng=0)
    assert sorted(sel.indices.tolist()) == [1, 2, 4, 6]


def test_multiplier_repeats_small_clusters():
    assign = np.array([0] + [1] * 20)
    level = LevelResult.from_assignments(np.zeros((2, 1), np.float32), assign, np.zeros(21, np.float32))
    sel = hierarchical_balanced_sampling([level], 6, multiplier=3, rng=0)
    assert dict(zip(sel.indices.tolist(), sel.multiplicity.tolist()))[0] == 3
    assert sel.multiplicity.sum() == 6


def test_invalid_requests():
    level = LevelResult.from_assignments(np.zeros((1, 1), np.float32), np.zeros(5, np.int64), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="target_size"):
        hierarchical_balanced_sampling([level], 6)
    with pytest.raises(ValueError, match="strategy"):
        hierarchical_balanced_sampling([level], 2, strategy="farthest")
    with pytest.raises(ValueError, match="multiplier"):
        hierarchical_balanced_sampling([level], 2, multiplier=0)


def test_balanced_beats_random_on_imbalanced_blobs():
    """Sampling over k-means clusters of a long-tailed mixture covers the tail better than random."""
    rng = np.random.default_rng(0)
    sizes = [2000, 1000, 400, 150, 60, 25, 10]
    mu = rng.normal(size=(len(sizes), 8)) * 6
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = (mu[labels] + rng.normal(size=(len(labels), 8))).astype(np.float32)
    levels = hierarchical_kmeans(
        x, {"n_clusters": [40, 8], "n_iters": 10, "n_resampling_steps": [3, 2], "sample_size": [5, 3]}
    )
    sel = hierarchical_balanced_sampling(levels, 300, rng=0)
    curated = np.bincount(labels[sel.indices], minlength=len(sizes))
    random = np.bincount(labels[rng.choice(len(labels), 300, replace=False)], minlength=len(sizes))
    assert curated[-3:].sum() > 2 * random[-3:].sum()
    assert np.array_equal(sort_clusters(levels[0].assignments, levels[0].distances, 40)[0], levels[0].offsets)
