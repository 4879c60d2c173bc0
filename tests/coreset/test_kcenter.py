"""k-center greedy against a brute-force reference; stratified and per-cluster radius bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import load_group
from pipeline.coreset.kcenter import covering_radius, k_center_greedy, stratified_k_center
from pipeline.coreset.percluster import cluster_budgets, per_cluster_k_center

torch.set_num_threads(1)

# conf/coreset/default.yaml's values (seed 0), passed explicitly as ``strata coreset`` passes them
CORESET = load_group("coreset/default")
L2 = {"metric": "l2", "device": "cpu"}
STRATIFIED = CORESET["stratified"]
PER_CLUSTER = {"allocation": "balanced", "seed": 0, **L2}


def brute_force_k_center(x: np.ndarray, k: int, start: int, metric: str = "l2", already=()):
    """Textbook O(k^2 N) farthest-point selection in float64 (no incremental state)."""
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)

    def dist(a, b):
        return np.linalg.norm(a - b, axis=-1) if metric == "l2" else 1 - a @ b.T

    centers = list(already)
    picks = []
    for t in range(k):
        if t == 0 and not centers:
            i = start
        else:
            d = np.min(np.stack([dist(x, x[c]) for c in centers]), axis=0)
            d[centers] = -np.inf
            i = int(np.argmax(d))
        picks.append(i)
        centers.append(i)
    d = np.min(np.stack([dist(x, x[c]) for c in centers]), axis=0)
    return np.array(picks), float(d.max())


def blobs(n: int, d: int = 8, m: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(m, d)) * 5
    return (centers[rng.integers(m, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_matches_brute_force(metric):
    x = blobs(300)
    for start in (0, 17):
        idx, radius = k_center_greedy(x, 25, start=start, metric=metric, device="cpu")
        ref_idx, ref_radius = brute_force_k_center(x, 25, start, metric)
        np.testing.assert_array_equal(idx, ref_idx)
        assert radius == pytest.approx(ref_radius, rel=1e-4, abs=1e-5)


def test_large_norms_not_capped():
    # The reference implementation starts min-distances at 1000: wrong once distances exceed it.
    x = blobs(200) * 1e4
    idx, radius = k_center_greedy(x, 10, start=3, **L2)
    ref_idx, ref_radius = brute_force_k_center(x, 10, 3)
    np.testing.assert_array_equal(idx, ref_idx)
    assert radius == pytest.approx(ref_radius, rel=1e-4) and radius > 1000


def test_already_selected_and_default_start():
    x = blobs(250, seed=1)
    already = [5, 80, 140]
    idx, radius = k_center_greedy(x, 12, already_selected=already, **L2)
    ref_idx, ref_radius = brute_force_k_center(x, 12, start=-1, already=already)
    np.testing.assert_array_equal(idx, ref_idx)
    assert not set(idx) & set(already)
    assert radius == pytest.approx(ref_radius, rel=1e-4)
    far = int(np.argmax(np.linalg.norm(x - x.mean(0), axis=1)))
    assert k_center_greedy(x, 1, **L2)[0][0] == far


def test_radius_matches_covering_radius_and_duplicates_allowed_when_exhausted():
    x = np.repeat(blobs(20, seed=2), 3, axis=0)  # every point three times
    idx, radius = k_center_greedy(x, 30, **L2)
    assert len(np.unique(idx)) == 30  # distinct indices even among exact duplicates
    assert radius == pytest.approx(0.0, abs=1e-3)
    idx, radius = k_center_greedy(x, 10, start=0, **L2)
    assert radius == pytest.approx(covering_radius(x, idx, **L2), rel=1e-4)


def test_covering_radius_on_a_sample_is_seeded():
    x = blobs(500, seed=6)
    idx = k_center_greedy(x, 20, **L2)[0]
    once, again = (covering_radius(x, idx, sample=50, seed=1, **L2) for _ in range(2))
    assert once == again <= covering_radius(x, idx, **L2)
    with pytest.raises(ValueError, match="needs a seed"):
        covering_radius(x, idx, sample=50, **L2)


def test_bad_input():
    x = blobs(10)
    with pytest.raises(ValueError):
        k_center_greedy(x, 11, **L2)
    with pytest.raises(ValueError):
        k_center_greedy(x[:, 0], 2, **L2)
    with pytest.raises(ValueError):
        k_center_greedy(x, 2, metric="manhattan", device="cpu")
    with pytest.raises(ValueError):
        k_center_greedy(np.full((4, 2), np.nan), 2, **L2)
    with pytest.raises(IndexError):
        k_center_greedy(x, 2, already_selected=[99], **L2)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 60), frac=st.floats(0, 1), seed=st.integers(0, 10))
def test_picks_distinct_and_sized(n, frac, seed):
    x = blobs(n, d=3, seed=seed)
    k = int(frac * n)
    for idx, _ in (
        k_center_greedy(x, k, start="random", seed=seed, **L2),
        stratified_k_center(x, k, **{**STRATIFIED, "sample_size": 8, "resample_every": 3}, seed=seed, **L2),
    ):
        assert len(idx) == k and len(np.unique(idx)) == k
        assert ((idx >= 0) & (idx < n)).all()


def test_stratified_radius_within_factor_of_exact():
    # Exact greedy is a 2-approximation; the stratified version is stated to stay within 1.25x of it.
    x = blobs(3000, d=16, m=40, seed=3)
    idx, exact = k_center_greedy(x, 150, **L2)
    s_idx, strat = stratified_k_center(
        x, 150, **{**STRATIFIED, "sample_size": 256, "resample_every": 64, "radius_sample": None}, seed=0, **L2
    )
    assert strat == pytest.approx(covering_radius(x, s_idx, **L2), rel=1e-4)
    assert strat <= 1.25 * exact
    rand = covering_radius(x, np.random.default_rng(0).choice(len(x), 150, replace=False), **L2)
    assert strat < rand


def test_stratified_pure_random_candidates_is_weaker_on_outliers():
    # Uniform candidates (the paper's sample) rarely see isolated points; the bound-guided half does.
    x = blobs(4000, d=16, m=10, seed=4)
    x[:8] += 60 * np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    _, guided = stratified_k_center(
        x, 100, **{**STRATIFIED, "sample_size": 128, "resample_every": 32, "radius_sample": None}, seed=0, **L2
    )
    _, uniform = stratified_k_center(
        x,
        100,
        sample_size=128,
        resample_every=32,
        random_fraction=1.0,
        bound_centers=0,
        radius_sample=None,
        seed=0,
        **L2,
    )
    assert guided < uniform


def test_cluster_budgets():
    sizes = np.array([3, 50, 10, 200])
    b = cluster_budgets(sizes, 40, allocation="balanced", seed=0)
    assert b.sum() == 40 and (b <= sizes).all() and b[0] == 3
    p = cluster_budgets(sizes, 40, allocation="proportional", seed=0)
    assert p.sum() == 40 and p[3] > p[1] > p[2]
    with pytest.raises(ValueError):
        cluster_budgets(sizes, 1000, allocation="balanced", seed=0)


@pytest.mark.parametrize("use_ray", [False, True])
def test_per_cluster_matches_independent_runs(use_ray, request):
    if use_ray:
        request.getfixturevalue("ray_session")
    x = blobs(600, seed=5)
    assignments = np.random.default_rng(0).integers(4, size=600)
    budgets = np.array([5, 0, 12, 600 - 600 + 7])
    idx, radius, radii = per_cluster_k_center(x, assignments, 0, budgets=budgets, use_ray=use_ray, **PER_CLUSTER)
    assert len(idx) == budgets.sum() and radius == np.inf and radii[1] == np.inf
    members = np.flatnonzero(assignments == 2)
    ref, ref_radius = k_center_greedy(x[members], 12, **L2)
    np.testing.assert_array_equal(idx[5:17], members[ref])
    assert radii[2] == pytest.approx(ref_radius)
    idx, radius, _ = per_cluster_k_center(x, assignments, 60, use_ray=use_ray, **PER_CLUSTER)
    assert len(np.unique(idx)) == 60
    assert covering_radius(x, idx, **L2) <= radius + 1e-4


@pytest.mark.parametrize("objective", ["closest", "random", "typical", "coverage"])
def test_per_cluster_coreset_takes_a_selection_objective(objective):
    """``per_cluster.objective``: same balanced budgets, the objective's points inside each cluster."""
    from pipeline.coreset.kcenter import min_distance_to_set
    from pipeline.coreset.run import select_coreset

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(c, 0.3, (n, 4)) for c, n in ((0, 120), (5, 40), (10, 8))]).astype(np.float32)
    cfg = {"method": "per_cluster", "size": 24, "per_cluster": {"n_clusters": 3, "objective": objective}}
    idx, radius, assignments, method = select_coreset(x, 24, cfg)
    assert method == "per_cluster" and len(np.unique(idx)) == 24
    np.testing.assert_array_equal(np.bincount(assignments[idx], minlength=3), [8, 8, 8])
    np.testing.assert_allclose(radius, min_distance_to_set(x, idx, **L2).max(), rtol=1e-5)
    if objective == "closest":  # the 8 points nearest each centroid
        for c in range(3):
            members = np.flatnonzero(assignments == c)
            d = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
            assert set(idx[assignments[idx] == c]) == set(members[np.argsort(d)[:8]])
    with pytest.raises(ValueError, match="per_cluster.objective"):
        select_coreset(x, 24, {**cfg, "per_cluster": {"objective": "nearest"}})
