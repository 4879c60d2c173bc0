"""Hierarchical balanced sampling on random hierarchies: exact size, caps, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kmeans.hierarchical import LevelResult, hierarchical_kmeans, sort_clusters
from pipeline.sampling.balanced import hierarchical_balanced_sampling, items_per_cluster, points_per_cluster


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


def test_items_per_cluster_composes_the_hierarchy():
    rng = np.random.default_rng(3)
    levels = random_hierarchy(rng, 200, [40, 9, 3])
    for level in (1, 2, 3):
        offsets, items = items_per_cluster(levels, level)
        ancestor = np.arange(200)
        for lv in levels[:level]:
            ancestor = lv.assignments[ancestor]
        assert sorted(items.tolist()) == list(range(200))
        for c in range(len(offsets) - 1):
            assert set(items[offsets[c] : offsets[c + 1]].tolist()) == set(np.flatnonzero(ancestor == c).tolist())
    # position 0 of a level-2 cluster: the closest item of its closest child
    offsets, items = items_per_cluster(levels, 2)
    first_child = levels[1].sorted_clusters[levels[1].offsets[:-1]]
    assert items[offsets[:-1]].tolist() == levels[0].sorted_clusters[levels[0].offsets[first_child]].tolist()


def two_blobs_two_scatters() -> tuple[np.ndarray, list[LevelResult]]:
    """Level 2: two groups far apart; each holds a dense blob (level-1 cluster of 5 points) and a
    sparse scatter (level-1 cluster of 3 points). The typical point of each group is its blob's centre."""
    blob = np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]])
    scatter = np.array([[3.0, 0.0], [4.0, 1.0], [4.0, -1.0]])
    x = np.vstack([blob, scatter, blob + 50, scatter + 50]).astype(np.float32)
    a1 = np.repeat([0, 1, 2, 3], [5, 3, 5, 3])
    c1 = np.stack([x[a1 == c].mean(0) for c in range(4)])
    lv1 = LevelResult.from_assignments(c1, a1, np.linalg.norm(x - c1[a1], axis=1).astype(np.float32))
    a2 = np.array([0, 0, 1, 1])
    c2 = np.stack([c1[a2 == c].mean(0) for c in range(2)])
    lv2 = LevelResult.from_assignments(c2, a2, np.linalg.norm(c1 - c2[a2], axis=1).astype(np.float32))
    return x, [lv1, lv2]


def test_pick_level_two_takes_the_typical_point_of_each_group():
    x, levels = two_blobs_two_scatters()
    for seed in range(8):
        sel = hierarchical_balanced_sampling(
            levels, 2, strategy="typical", x=x, rng=seed, settings={"k": 4}, pick_level=2
        )
        assert sorted(sel.indices.tolist()) == [0, 8]  # the blob centres
        assert sel.budgets[0].tolist() == [1, 0, 1, 0] and sel.budgets[1].tolist() == [1, 1]
    # at level 1 the water-filling sends a group's single pick to the scatter half of the time
    at_level_1 = [
        set(hierarchical_balanced_sampling(levels, 2, strategy="typical", x=x, rng=s, settings={"k": 4}).indices)
        for s in range(8)
    ]
    assert any(not pick <= {0, 1, 2, 3, 4, 8, 9, 10, 11, 12} for pick in at_level_1)
    with pytest.raises(ValueError, match="pick_level"):
        hierarchical_balanced_sampling(levels, 2, pick_level=3)


def test_budget_clusters_take_the_typical_point_of_each_of_b_clusters():
    """TypiClust: three far-apart groups, each a dense blob plus a sparse halo; 3 picks = the 3 blob centres
    whatever the hierarchy (here one level-1 cluster holding everything)."""
    rng = np.random.default_rng(0)
    blob = np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]])
    spread = np.vstack([blob, rng.uniform(-2, 2, (6, 2))])  # off-axis offsets: blob, then halo
    x = np.zeros((33, 3), np.float32)  # cosine k-means: the groups are three directions
    for g in range(3):
        rows = slice(11 * g, 11 * g + 11)
        x[rows, g] = 10.0
        x[rows, [a for a in range(3) if a != g]] = spread
    level = LevelResult.from_assignments(
        np.zeros((1, 3), np.float32), np.zeros(len(x), np.int64), rng.random(len(x)).astype(np.float32)
    )
    for seed in range(3):
        sel = hierarchical_balanced_sampling(
            [level], 3, strategy="typical", x=x, rng=seed, settings={"k": 4}, pick_level="budget"
        )
        assert sorted(sel.indices.tolist()) == [0, 11, 22]
        assert sel.budgets[0].tolist() == [3]
    with pytest.raises(ValueError, match="budget"):
        hierarchical_balanced_sampling([level], 3, strategy="typical", x=x, pick_level="budget", multiplier=2)
