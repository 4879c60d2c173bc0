"""k-means with k = the budget inside every group at once (balance-keeping TypiClust)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.sampling.budget_clusters import group_budget_clusters


def blobs(rng: np.random.Generator, n_blobs: int, per_blob: int, dim: int = 12) -> np.ndarray:
    """``n_blobs`` tight blobs along distinct directions e_j (cosine k-means separates them exactly)."""
    x = np.zeros((n_blobs * per_blob, dim), np.float32)
    for j in range(n_blobs):
        x[j * per_blob : (j + 1) * per_blob, j] = 10.0
    return x + rng.normal(0, 0.05, x.shape).astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
def test_each_group_is_split_into_its_blobs(seed):
    """Groups of 2, 0 (left out) and 3 blobs (rows shuffled inside a group); k = the blob count:
    every sub-cluster is exactly one blob of its own group, members sorted by distance to its centre."""
    rng = np.random.default_rng(seed)
    x = blobs(rng, 7, 6)  # blobs 0-1: group 0, 2-3: group 1 (k = 0), 4-6: group 2
    blob = np.repeat(np.arange(7), 6)
    offsets = np.array([0, 12, 24, 42])
    items = np.concatenate([rng.permutation(np.arange(a, b)) for a, b in zip(offsets[:-1], offsets[1:])])
    sub_offsets, sub_items, sub_group = group_budget_clusters(x, offsets, items, np.array([2, 0, 3]), seed, n_iters=20)
    assert sub_group.tolist() == [0, 0, 2, 2, 2]
    assert np.diff(sub_offsets).tolist() == [6] * 5
    members = [sub_items[a:b] for a, b in zip(sub_offsets[:-1], sub_offsets[1:])]
    assert sorted(int(blob[m[0]]) for m in members) == [0, 1, 4, 5, 6]
    assert all(len(set(blob[m])) == 1 for m in members)
    for m, g in zip(members, sub_group):
        assert offsets[g] <= np.flatnonzero(np.isin(items, m)).min() < offsets[g + 1]
        xn = x[m] / np.linalg.norm(x[m], axis=1, keepdims=True)
        c = xn.mean(0) / np.linalg.norm(xn.mean(0))
        d = 1 - xn @ c
        assert np.all(np.diff(d) >= -1e-6)


def test_k_outside_the_group_size_is_refused():
    x = blobs(np.random.default_rng(0), 2, 3)
    with pytest.raises(ValueError, match="k <= group size"):
        group_budget_clusters(x, np.array([0, 3, 6]), np.arange(6), np.array([4, 1]), 0, n_iters=5)
