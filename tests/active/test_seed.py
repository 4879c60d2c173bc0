"""Seed set: exactly n_neighbors nearest neighbours + n_random random rows, no duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.active.seed import pool_index, seed_set


def _pool(n: int = 500, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exactly_64_nn_plus_32_random_without_duplicates() -> None:
    x = _pool()
    index = pool_index(x, [f"i{i}" for i in range(len(x))])
    starter = 7
    seeds = seed_set(index, x[[starter]], 64, 32, np.random.default_rng(0), exclude_rows=[starter])
    assert len(seeds.neighbors) == 64 and len(seeds.random) == 32
    rows = seeds.rows
    assert len(np.unique(rows)) == 96 and starter not in rows
    sims = x @ x[starter]
    sims[starter] = -np.inf
    np.testing.assert_array_equal(seeds.neighbors, np.argsort(-sims, kind="stable")[:64])
    again = seed_set(index, x[[starter]], 64, 32, np.random.default_rng(0), exclude_rows=[starter])
    np.testing.assert_array_equal(again.rows, rows)


def test_several_starters_use_best_similarity_and_count_rows_once() -> None:
    x = _pool(300)
    x[10] = x[11] = x[12]  # exact duplicates must not be picked twice through different starters
    index = pool_index(x, [str(i) for i in range(len(x))])
    starters = np.array([12, 40])
    seeds = seed_set(index, x[starters], 20, 10, np.random.default_rng(1), exclude_rows=starters)
    assert len(np.unique(seeds.rows)) == 30 and not np.isin(starters, seeds.rows).any()
    best = (x @ x[starters].T).max(1)
    best[starters] = -np.inf
    np.testing.assert_array_equal(np.sort(seeds.neighbors), np.sort(np.argsort(-best, kind="stable")[:20]))
    assert {10, 11} <= set(seeds.neighbors.tolist())


def test_pool_too_small() -> None:
    x = _pool(50)
    with pytest.raises(ValueError, match="does not fit"):
        seed_set(pool_index(x, list(range(50))), x[:1], 40, 10, np.random.default_rng(0), exclude_rows=[0])
