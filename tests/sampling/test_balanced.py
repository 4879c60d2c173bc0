"""Hierarchical balanced sampling on random hierarchies: exact size, caps, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.kmeans.hierarchical import LevelResult, hierarchical_kmeans, sort_clusters
from pipeline.sampling.balanced import hierarchical_balanced_sampling, items_per_cluster, points_per_cluster

FLAT = {"strategy": "closest", "multiplier": 1, "pick_level": 1, "allocation_power": 0.0}
BUDGET_KMEANS = {"n_iters": 20, "max_points_per_centroid": 256, "max_whole_pool": 1024}


def sample(levels, target, **settings):
    """The sampling with flat closest-first settings unless given (TypiClust over the whole pool for pick_level=budget)."""
    return hierarchical_balanced_sampling(
        levels, target, **{**FLAT, "budget_clusters": {"split": None, **BUDGET_KMEANS}, **settings}
    )


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
    sel = sample(levels, target, strategy=strategy, multiplier=multiplier, rng=seed)
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
    sel = sample([level], 4, strategy="closest", rng=0)
    assert sorted(sel.indices.tolist()) == [1, 2, 4, 6]


def test_multiplier_repeats_small_clusters():
    assign = np.array([0] + [1] * 20)
    level = LevelResult.from_assignments(np.zeros((2, 1), np.float32), assign, np.zeros(21, np.float32))
    sel = sample([level], 6, multiplier=3, rng=0)
    assert dict(zip(sel.indices.tolist(), sel.multiplicity.tolist()))[0] == 3
    assert sel.multiplicity.sum() == 6


def test_invalid_requests():
    level = LevelResult.from_assignments(np.zeros((1, 1), np.float32), np.zeros(5, np.int64), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="target_size"):
        sample([level], 6)
    with pytest.raises(ValueError, match="strategy"):
        sample([level], 2, strategy="farthest")
    with pytest.raises(ValueError, match="multiplier"):
        sample([level], 2, multiplier=0)


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
    sel = sample(levels, 300, rng=0)
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
        sel = sample(
            levels, 2, strategy="typical", x=x, rng=seed, settings={"k": 4, "max_reference": 256}, pick_level=2
        )
        assert sorted(sel.indices.tolist()) == [0, 8]  # the blob centres
        assert sel.budgets[0].tolist() == [1, 0, 1, 0] and sel.budgets[1].tolist() == [1, 1]
    # at level 1 the water-filling sends a group's single pick to the scatter half of the time
    at_level_1 = [
        set(sample(levels, 2, strategy="typical", x=x, rng=s, settings={"k": 4, "max_reference": 256}).indices)
        for s in range(8)
    ]
    assert any(not pick <= {0, 1, 2, 3, 4, 8, 9, 10, 11, 12} for pick in at_level_1)
    with pytest.raises(ValueError, match="pick_level"):
        sample(levels, 2, pick_level=3)


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
        sel = sample(
            [level], 3, strategy="typical", x=x, rng=seed, settings={"k": 4, "max_reference": 256}, pick_level="budget"
        )
        assert sorted(sel.indices.tolist()) == [0, 11, 22]
        assert sel.budgets[0].tolist() == [3]
    with pytest.raises(ValueError, match="budget"):
        sample([level], 3, strategy="typical", x=x, pick_level="budget", multiplier=2)


def two_concepts_of_blobs(rng: np.random.Generator) -> tuple[np.ndarray, list[LevelResult], np.ndarray]:
    """A big concept (4 blobs of 20: a 5-point core and a 15-point halo) and a small one (2 blobs of 5),
    blob j along direction e_j (cosine k-means); level 1 = the 6 blobs, level 2 = the 2 concepts.
    Returns x, the levels and the core centre of every blob (its most typical point)."""
    core = np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]])
    rows, assign, centres = [], [], []
    for j, halo in enumerate([15, 15, 15, 15, 0, 0]):
        off = np.vstack([core, rng.uniform(-2, 2, (halo, 2))])
        blob = np.zeros((len(off), 8))
        blob[:, j], blob[:, 6:] = 10.0, off
        centres.append(sum(len(r) for r in rows))
        rows.append(blob)
        assign += [j] * len(off)
    x, a1 = np.vstack(rows).astype(np.float32), np.array(assign)
    c1 = np.stack([x[a1 == c].mean(0) for c in range(6)])
    lv1 = LevelResult.from_assignments(c1, a1, np.linalg.norm(x - c1[a1], axis=1).astype(np.float32))
    a2 = np.array([0, 0, 0, 0, 1, 1])
    c2 = np.stack([c1[a2 == c].mean(0) for c in range(2)])
    lv2 = LevelResult.from_assignments(c2, a2, np.linalg.norm(c1 - c2[a2], axis=1).astype(np.float32))
    return x, [lv1, lv2], np.array(centres)


def test_split_typiclust_keeps_the_concept_balance_and_takes_typical_points():
    """split 2, 4 picks: level 2 (2 clusters <= 4 / 2) gets 2 + 2 (flat water-filling), then a k-means with
    k = 2 inside each concept: the small concept's two blob centres, and two blob centres of the big one."""
    x, levels, centres = two_concepts_of_blobs(np.random.default_rng(0))
    for seed in range(4):
        sel = hierarchical_balanced_sampling(
            levels,
            4,
            strategy="typical",
            multiplier=1,
            pick_level="budget",
            allocation_power=0.0,
            x=x,
            rng=seed,
            settings={"k": 4, "max_reference": 256},
            budget_clusters={"split": 2, **BUDGET_KMEANS},
        )
        assert sel.split_level == 2 and sel.budgets[1].tolist() == [2, 2]
        assert set(sel.indices.tolist()) <= set(centres.tolist()), sel.indices
        assert {int(centres[4]), int(centres[5])} <= set(sel.indices.tolist())
        assert sel.multiplicity.sum() == 4
    # no level with <= 4 / 8 clusters: one k-means of the whole pool (TypiClust as published)
    sel = hierarchical_balanced_sampling(
        levels,
        4,
        strategy="typical",
        multiplier=1,
        pick_level="budget",
        allocation_power=0.0,
        x=x,
        rng=0,
        settings={"k": 4, "max_reference": 256},
        budget_clusters={"split": 8, **BUDGET_KMEANS},
    )
    assert sel.split_level == 0 and sel.multiplicity.sum() == 4


def test_split_level_is_the_finest_level_that_fits_the_budget():
    from pipeline.sampling.balanced import split_level

    assert split_level([123, 24], 63, 2, 1024) == 2  # 24 * 2 <= 63 < 123 * 2
    assert split_level([123, 24], 300, 2, 1024) == 1
    assert split_level([123, 24], 21, 1, 1024) == 0  # fewer picks than top-level clusters: the whole pool
    assert split_level([123, 24], 21, 1, 20) == 2  # ... unless that k-means would be too large: the top level
    assert split_level([123, 24], 300, None, 10) == 0
    with pytest.raises(ValueError, match="split"):
        split_level([4], 8, 0, 1024)
