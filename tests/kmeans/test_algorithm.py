"""Single-process and sharded k-means against brute-force numpy, faiss.Kmeans and sklearn."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from pipeline.kmeans.algorithm import INITIALISERS, LocalGroup, fit_group, kmeans, kmeans_plus_plus_init
from pipeline.kmeans.config import INITS
from pipeline.kmeans.hierarchical import KMeansConfig, allocate_splits, hierarchical_kmeans, sort_clusters
from pipeline.kmeans.shard import Shard, splitmix64_uniform

# What fit_group's callers used to get by default: k-means++ on every row, Euclidean.
FIT = {"init": "kmeans++", "metric": "l2", "init_sample_flops": np.inf}


def numpy_lloyd(x: np.ndarray, c: np.ndarray, n_iters: int) -> np.ndarray:
    c = c.astype(np.float64).copy()
    for _ in range(n_iters):
        a = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            if (a == j).any():
                c[j] = x[a == j].mean(0)
    return c


def inertia(x: np.ndarray, c: np.ndarray) -> float:
    return float(((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1).min(1).sum())


def test_lloyd_matches_numpy_and_faiss_from_same_init(make_blobs):
    x, _ = make_blobs(3000, 16, 25, spread=1.0)
    rng = np.random.default_rng(0)
    init = x[rng.choice(len(x), 25, replace=False)]
    ours, assign, dist = kmeans(x, 25, 15, init=init, metric="l2")
    ref = numpy_lloyd(x, init, 15)
    km = faiss.Kmeans(16, 25, niter=15, max_points_per_centroid=10**7, min_points_per_centroid=1, seed=0)
    km.train(x, init_centroids=init)
    assert inertia(x, ours) == pytest.approx(inertia(x, ref), rel=1e-4)
    assert inertia(x, ours) == pytest.approx(inertia(x, km.centroids), rel=1e-4)
    # the returned assignment is the nearest final centroid, with its squared distance
    d2 = ((x[:, None, :] - ours[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign, d2.argmin(1))
    np.testing.assert_allclose(dist, d2.min(1), rtol=1e-4, atol=1e-4)


def test_cosine_kmeans_matches_spherical_reference(make_blobs):
    x, _ = make_blobs(800, 8, 6, spread=0.8)
    init = x[:6]
    c, assign, dist = kmeans(x, 6, 10, init=init, metric="cosine")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = init / np.linalg.norm(init, axis=1, keepdims=True)
    for _ in range(10):
        a = (xn @ ref.T).argmax(1)
        ref = np.stack([xn[a == j].sum(0) for j in range(6)])
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(c, ref, atol=1e-5)
    np.testing.assert_allclose(dist, 1 - (xn @ c.T).max(1), atol=1e-5)


def test_kmeans_plus_plus_seeds_every_separated_blob(make_blobs):
    x, labels = make_blobs(2000, 8, 10, seed=3, spread=0.05)
    centres = kmeans_plus_plus_init(x, 10, np.random.default_rng(1), metric="l2")
    rows = {tuple(r) for r in x}
    assert all(tuple(c) in rows for c in centres)
    nearest = ((centres[:, None, :] - x[None]) ** 2).sum(-1).argmin(1)
    assert len(set(labels[nearest])) == 10


def test_sharded_equals_single_shard(make_blobs):
    x, _ = make_blobs(1500, 12, 9, spread=1.0)
    single = LocalGroup([Shard(x, metric="l2", out_of_core=False)])
    bounds = [0, 300, 301, 1100, 1500]
    sharded = LocalGroup(
        [Shard(x[a:b], offset=a, metric="l2", out_of_core=False) for a, b in zip(bounds[:-1], bounds[1:])]
    )
    c1, i1 = fit_group(single, 20, 8, **FIT, rng=np.random.default_rng(5), tol=0.0)
    c2, i2 = fit_group(sharded, 20, 8, **FIT, rng=np.random.default_rng(5), tol=0.0)
    np.testing.assert_allclose(c1, c2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(i1, i2, rtol=1e-9)


def test_empty_clusters_are_reseeded_with_far_points(make_blobs):
    x, _ = make_blobs(500, 4, 5, spread=0.5)
    init = np.repeat(x[:1], 5, axis=0)  # identical centroids: four clusters start empty
    c, assign, _ = kmeans(x, 5, 10, init=init, metric="l2")
    assert len(np.unique(c, axis=0)) == 5
    assert np.bincount(assign, minlength=5).min() > 0


def test_bad_input_is_rejected():
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="cannot pick"):
        kmeans(x, 11, 20, init="kmeans++", metric="l2")
    with pytest.raises(ValueError, match="metric"):
        kmeans(x, 2, 20, init="kmeans++", metric="manhattan")
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((4, 2), np.nan, dtype=np.float32), 2, 20, init="kmeans++", metric="l2")
    with pytest.raises(ValueError, match="one per level"):
        KMeansConfig.from_dict({"n_clusters": [8, 4], "n_iters": [1, 2, 3]})


def test_every_configurable_init_is_a_registry_entry(make_blobs):
    """``kmeans.init`` names (validated by the config) and :data:`INITIALISERS` agree; each entry
    gives k distinct rows of the data (0 Lloyd steps), an unknown name is a one-line error."""
    assert set(INITIALISERS) == set(INITS)
    x, _ = make_blobs(200, 4, 5, spread=0.5)
    for name in INITIALISERS:
        c, _ = fit_group(
            LocalGroup([Shard(x, metric="l2", out_of_core=False)]),
            5,
            0,
            **{**FIT, "init": name},
            rng=np.random.default_rng(0),
            tol=0.0,
        )
        assert len(np.unique(c, axis=0)) == 5 and all((x == row).all(axis=1).any() for row in c), name
    with pytest.raises(ValueError, match="init must be one of"):
        fit_group(
            LocalGroup([Shard(x, metric="l2", out_of_core=False)]),
            5,
            0,
            **{**FIT, "init": "kmeans||"},
            rng=np.random.default_rng(0),
            tol=0.0,
        )
    with pytest.raises(ValueError, match="smaller"):
        KMeansConfig.from_dict({"n_clusters": [4, 8]})


def test_sort_clusters_csr():
    assign = np.array([2, 0, 2, 1, 0, 2])
    dist = np.array([0.5, 0.2, 0.1, 0.3, 0.1, 0.5])
    offsets, members, member_dist = sort_clusters(assign, dist, 4)
    np.testing.assert_array_equal(offsets, [0, 2, 3, 6, 6])
    np.testing.assert_array_equal(members, [4, 1, 3, 2, 0, 5])
    np.testing.assert_array_equal(member_dist, dist[members])


def test_resampling_spreads_centroids_out_of_a_dense_region():
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(4000, 2)) * 0.3  # 80% of the points in one small blob
    sparse = rng.uniform(-10, 10, size=(1000, 2))
    x = np.concatenate([dense, sparse]).astype(np.float32)
    share = {}
    for steps in (0, 10):
        cfg = {"n_clusters": [40], "n_iters": 20, "n_resampling_steps": [steps], "sample_size": [4], "metric": "l2"}
        (level,) = hierarchical_kmeans(x, cfg)
        share[steps] = float((np.abs(level.centroids).max(1) < 1.2).mean())
    # plain k-means puts ~density^(d/(d+2)) of its centroids in the blob; resampling far fewer
    assert share[0] >= 0.1 and share[10] <= share[0] / 2


def test_hierarchical_levels_are_consistent_and_shard_independent(make_blobs):
    x, _ = make_blobs(1500, 8, 15, spread=0.8)
    for strategy in ("closest", "random"):
        cfg = {
            "n_clusters": [30, 6],
            "n_iters": 8,
            "n_resampling_steps": [2, 2],
            "sample_size": [5, 3],
            "resampling_strategy": strategy,
            "metric": "cosine",
            "n_splits": [3, 1],
        }
        one = hierarchical_kmeans(x, cfg)
        three = hierarchical_kmeans(x, cfg, n_shards=3)
        for a, b in zip(one, three):
            np.testing.assert_array_equal(a.assignments, b.assignments)
            np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-6)
        assert [len(lv.centroids) for lv in one] == [30, 6]
        assert len(one[1].assignments) == 30 and one[0].offsets[-1] == 1500


def test_allocate_splits_and_random_keys():
    np.testing.assert_array_equal(allocate_splits(np.array([1, 10, 4]), 9, 3), [1, 5, 3])
    with pytest.raises(ValueError):
        allocate_splits(np.array([1, 2]), 4, 2)
    u = splitmix64_uniform(np.arange(100000), 7)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(u[500:600], splitmix64_uniform(np.arange(500, 600), 7))


def test_cosine_kmeans_leaves_callers_array_untouched():
    from pipeline.kmeans.algorithm import kmeans

    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32) * 5
    before = x.copy()
    kmeans(x, 4, 3, init="kmeans++", metric="cosine", seed=0)
    np.testing.assert_array_equal(x, before)
    x.setflags(write=False)
    kmeans(x, 4, 3, init="kmeans++", metric="cosine", seed=0)  # read-only input (e.g. an Arrow buffer) is fine


def test_is_actor_loss_follows_causes():
    import ray

    from pipeline.kmeans.algorithm import ShardLost, is_actor_loss

    assert is_actor_loss(ShardLost("x"))
    assert not is_actor_loss(RuntimeError("x"))
    try:
        try:
            raise ray.exceptions.ActorDiedError()
        except ray.exceptions.ActorDiedError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        assert is_actor_loss(outer)


def test_init_random_draws_rows_uniformly_and_reaches_the_hierarchy(monkeypatch, make_blobs):
    from scipy.stats import chisquare

    from pipeline.kmeans import algorithm

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(11, 3)), [[1000.0, 0.0, 0.0]]]).astype(np.float32)  # row 11: far outlier
    picked = np.zeros(len(x))
    outlier = {"random": 0, "kmeans++": 0}
    for seed in range(600):
        for init in outlier:
            centroids, _, _ = kmeans(x, 2, 0, init=init, metric="l2", seed=seed)  # 0 Lloyd steps: the initial centres
            rows = [int(np.flatnonzero((x == c).all(axis=1))[0]) for c in centroids]
            assert len(set(rows)) == 2
            outlier[init] += 11 in rows
            if init == "random":
                picked[rows] += 1
    assert chisquare(picked).pvalue > 1e-3, picked  # every row equally likely
    # uniform: the outlier is a centre with P = 2/12 (100 of 600, sd 9); D^2 sampling picks it always
    assert outlier["kmeans++"] == 600 and 55 <= outlier["random"] <= 145

    calls = []
    draw = algorithm.random_init
    monkeypatch.setattr(algorithm, "random_init", lambda *a, **kw: calls.append(1) or draw(*a, **kw))
    blobs, _ = make_blobs(300, 4, 5)
    (level,) = hierarchical_kmeans(blobs, {"n_clusters": [6], "n_iters": 3, "init": "random", "metric": "l2"})
    assert calls and len(level.centroids) == 6


def test_web_scale_preset_resolves_and_runs_at_small_size(make_blobs):
    """`kmeans=web_scale` as shipped (4 levels, split mode + random resampling at level 1, cosine),
    with only the sizes and the hardware shrunk, runs end to end on 800 points."""
    from hydra import compose, initialize_config_dir

    from jobs._config import to_dict
    from tests.conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        shipped = to_dict(compose("cluster", overrides=["kmeans=web_scale"]).kmeans)
        small = to_dict(
            compose(
                "cluster",
                overrides=[
                    "kmeans=web_scale",
                    "kmeans.n_clusters=[40,12,6,3]",
                    "kmeans.n_splits=[4,1,1,1]",
                    "kmeans.n_iters=5",
                    "kmeans.n_resampling_steps=2",
                    "kmeans.sample_size=[4,3,2,2]",
                    "kmeans.use_gpu=false",
                    "kmeans.in_process=true",
                    "kmeans.chunk_mb=8",
                    "kmeans.threads_per_actor=1",
                    "kmeans.split_tasks=2",
                ],
            ).kmeans
        )
    assert shipped["n_clusters"] == [10_000_000, 500_000, 50_000, 10_000] and shipped["n_splits"][0] > 1
    assert shipped["resampling_strategy"] == small["resampling_strategy"] == ["random", "closest", "closest", "closest"]
    assert small["metric"] == "cosine" and small["init"] == shipped["init"]
    x, _ = make_blobs(800, 8, 20)
    levels = hierarchical_kmeans(x, small)
    assert [len(lv.centroids) for lv in levels] == [40, 12, 6, 3]
    assert [len(lv.assignments) for lv in levels] == [800, 40, 12, 6]
    for lv in levels:
        np.testing.assert_allclose(np.linalg.norm(lv.centroids, axis=1), 1.0, rtol=1e-5)  # spherical
        np.testing.assert_array_equal(np.diff(lv.offsets), np.bincount(lv.assignments, minlength=len(lv.centroids)))


def test_a_shard_built_without_a_config_takes_conf_kmeans_chunk_mb_and_use_gpu():
    from pipeline.config import load_group

    conf = load_group("kmeans/default")
    shard = Shard(np.zeros((4, 2), np.float32), metric="l2", out_of_core=False)
    assert shard.chunk_bytes == int(conf["chunk_mb"] * 2**20) and shard.use_gpu is False is conf["use_gpu"]
