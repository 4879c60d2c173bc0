"""Water-filling allocation: exact budgets, caps, balance (hypothesis properties)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.sampling.water_filling import segmented_water_filling, water_filling


def brute_force_cap(sizes: list[int], target: int) -> int:
    return max(x for x in range(max(sizes) + 1) if sum(min(x, s) for s in sizes) <= target)


def test_small_example():
    counts = water_filling(np.array([1, 5, 10, 3, 7]), 15, np.random.default_rng(0))
    # cap 3: 1 + 3 + 3 + 3 + 3 = 13, the remaining 2 go to two of the clusters above the cap
    assert counts.sum() == 15 and counts[0] == 1 and counts[3] == 3
    assert sorted(counts[[1, 2, 4]]) == [3, 4, 4]


def test_budget_larger_than_sizes_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        water_filling(np.array([1, 2]), 4, np.random.default_rng(0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60), min_size=1, max_size=40), st.floats(0, 1), st.integers(0, 2**31))
def test_water_filling_properties(sizes, frac, seed):
    sizes_arr = np.array(sizes)
    target = int(round(frac * sizes_arr.sum()))
    counts = water_filling(sizes_arr, target, np.random.default_rng(seed))
    assert counts.sum() == target
    assert np.all(counts <= sizes_arr) and np.all(counts >= 0)
    cap = brute_force_cap(sizes, target)
    # clusters at or under the cap are taken whole; the others get cap or cap + 1
    np.testing.assert_array_equal(counts[sizes_arr <= cap], sizes_arr[sizes_arr <= cap])
    assert set(counts[sizes_arr > cap].tolist()) <= {cap, cap + 1}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=0, max_size=8), min_size=1, max_size=10), st.integers(0, 2**31))
def test_segmented_equals_one_group_at_a_time(groups, seed):
    sizes = np.array([s for g in groups for s in g], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(g) for g in groups])])
    rng = np.random.default_rng(seed)
    targets = np.array([rng.integers(0, sum(g) + 1) for g in groups])
    counts = segmented_water_filling(sizes, offsets, targets, np.random.default_rng(seed))
    for g, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        assert counts[a:b].sum() == targets[g]
        if b > a:
            cap = brute_force_cap(groups[g], int(targets[g]))
            assert np.all(counts[a:b] == np.minimum(sizes[a:b], cap) + (counts[a:b] > np.minimum(sizes[a:b], cap)))


def brute_force_power(sizes: np.ndarray, target: int, power: float) -> np.ndarray:
    """Floors of the allocation at the largest share level l with sum_i min(s_i, floor(l s_i^g)) <= target."""
    w = sizes.astype(float) ** power
    levels = np.unique(np.concatenate([[0.0], *(np.arange(1, s + 1) / wi for s, wi in zip(sizes, w) if s)]))
    ok = [lv for lv in levels if np.minimum(sizes, np.floor(lv * w + 1e-9)).sum() <= target]
    return np.minimum(sizes, np.floor(max(ok) * w + 1e-9)).astype(int)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=20),
    st.floats(0, 1),
    st.sampled_from([0.5, 1.0, 2.0]),
    st.integers(0, 2**31),
)
def test_power_allocation_matches_brute_force(sizes, frac, power, seed):
    sizes_arr = np.array(sizes)
    target = int(round(frac * sizes_arr.sum()))
    counts = water_filling(sizes_arr, target, np.random.default_rng(seed), power)
    assert counts.sum() == target and np.all(counts <= sizes_arr) and np.all(counts >= 0)
    floor = brute_force_power(sizes_arr, target, power)
    assert np.all((counts == floor) | (counts == floor + 1))


def test_power_one_is_proportional_and_zero_is_flat():
    sizes = np.array([100, 50, 10, 40])
    assert water_filling(sizes, 40, np.random.default_rng(0), 1.0).tolist() == [20, 10, 2, 8]
    assert water_filling(sizes, 40, np.random.default_rng(0), 0.0).tolist() == [10, 10, 10, 10]
    half = water_filling(sizes, 40, np.random.default_rng(0), 0.5)  # between: big clusters more, not in proportion
    assert half[0] > half[1] > half[2] and half[0] < 20 and half.sum() == 40
    with pytest.raises(ValueError, match="power"):
        water_filling(sizes, 40, np.random.default_rng(0), -1.0)
