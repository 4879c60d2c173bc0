"""Large k (issue 28): HNSW assignment, init by size, progress inside a step, the long-run warning."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from pipeline.kmeans import plan as P
from pipeline.kmeans.algorithm import (
    LocalGroup,
    fit_group,
    init_sample_size,
    random_init,
    sample_kmeans_plus_plus,
)
from pipeline.kmeans.config import CentroidIndex, KMeansConfig
from pipeline.kmeans.hierarchical import fit_level
from pipeline.kmeans.run import run_cluster
from pipeline.kmeans.shard import Shard
from pipeline.progress import read_log

EXACT = CentroidIndex("exact")
# efSearch and efConstruction above k: the graph search visits every centroid, so it is exact
WIDE_HNSW = CentroidIndex("hnsw", 1, 16, 256, 256)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_hnsw_assignment_equals_exact_where_the_index_is_exact(make_blobs, metric):
    x, _ = make_blobs(600, 8, 10)
    centroids = x[np.random.default_rng(1).choice(len(x), 40, replace=False)]
    exact, approx = (
        Shard(x, metric=metric, out_of_core=False, centroid_index=EXACT),
        Shard(x, metric=metric, out_of_core=False, centroid_index=WIDE_HNSW),
    )
    assert approx.centroid_index.uses_hnsw(40)
    exact.assign_all(centroids)
    approx.assign_all(centroids)
    np.testing.assert_array_equal(approx.assign, exact.assign)
    np.testing.assert_allclose(approx.dist, exact.dist, rtol=1e-5, atol=1e-5)
    # and a whole Lloyd run from the same start (the hint path included) gives the same centroids
    ce, ie = fit_group(
        LocalGroup([exact]),
        40,
        6,
        init=centroids,
        metric=metric,
        init_sample_flops=np.inf,
        rng=np.random.default_rng(0),
        tol=0.0,
    )
    ca, ia = fit_group(
        LocalGroup([approx]),
        40,
        6,
        init=centroids,
        metric=metric,
        init_sample_flops=np.inf,
        rng=np.random.default_rng(0),
        tol=0.0,
    )
    np.testing.assert_allclose(ca, ce, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ia, ie, rtol=1e-5)


def test_auto_uses_hnsw_only_for_large_k_on_cpu():
    auto = CentroidIndex("auto", 4096)
    assert not auto.uses_hnsw(4095) and auto.uses_hnsw(4096)
    assert not auto.uses_hnsw(10**6, gpu=True)  # brute force on GPUs
    assert not EXACT.uses_hnsw(10**6) and CentroidIndex("hnsw").uses_hnsw(2)


def test_hinted_hnsw_never_moves_a_point_to_a_farther_centroid(make_blobs):
    """A poor graph search (efSearch 1) keeps the hinted centroid when that one is nearer."""
    x, _ = make_blobs(800, 16, 20)
    centroids = x[np.random.default_rng(2).choice(len(x), 64, replace=False)]
    shard = Shard(x, metric="l2", out_of_core=False, centroid_index=CentroidIndex("hnsw", 1, 4, 8, 1))
    shard.lloyd_stats(centroids)
    hint = shard._fit_assign.copy()
    d_hint = ((x - centroids[hint]) ** 2).sum(1)
    shard.lloyd_stats(centroids, True)
    assert np.all(shard._fit_dist <= d_hint + 1e-4)


def test_init_sample_size_by_hand():
    # 2 n k t D = 2 * 10,000 * 100 * 6 * 16 = 1.92e8
    assert init_sample_size(10_000, 100, 16, 6, 2e8) == 10_000  # all rows within the budget
    assert init_sample_size(10_000, 100, 16, 6, 1e8) == int(1e8 // (2 * 100 * 6 * 16))  # 5,208
    assert init_sample_size(10_000, 100, 16, 6, 1e6) == 100  # budget below k rows: k (random init)


def test_sampled_init_is_seeded_and_picks_data_rows(make_blobs):
    x, _ = make_blobs(3000, 16, 30)
    group = LocalGroup(
        [Shard(x[:1700], metric="l2", out_of_core=False), Shard(x[1700:], metric="l2", out_of_core=False, offset=1700)]
    )
    flops = 2 * 60 * 5 * 16 * 400.0  # a 400-row sample
    assert init_sample_size(3000, 60, 16, 5, flops) == 400
    a = sample_kmeans_plus_plus(group, 60, np.random.default_rng(7), 5, flops)
    b = sample_kmeans_plus_plus(group, 60, np.random.default_rng(7), 5, flops)
    c = sample_kmeans_plus_plus(group, 60, np.random.default_rng(8), 5, flops)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(np.unique(a, axis=0)) == 60
    rows = {r.tobytes() for r in x}
    assert all(r.tobytes() in rows for r in a)
    # below k rows of budget it is exactly the random init
    np.testing.assert_array_equal(
        sample_kmeans_plus_plus(group, 60, np.random.default_rng(3), 5, 1.0),
        random_init(group, 60, np.random.default_rng(3)),
    )


def test_progress_advances_inside_every_step(make_blobs):
    x, _ = make_blobs(900, 8, 9)
    kc = KMeansConfig.from_dict(
        {
            "n_clusters": [20],
            "n_iters": [5],
            "n_resampling_steps": [1],
            "sample_size": [10],
            "init": "kmeans++",
            "tol": 0.0,
        }
    )
    events = []
    fit_level(
        LocalGroup([Shard(x, metric="l2", out_of_core=False)]),
        kc.levels[0],
        kc,
        1,
        progress=lambda *e, **m: events.append((*e, m)),
    )
    for step in (0, 1):
        init = [e for e in events if e[:2] == (step, "init")]
        lloyd = [e for e in events if e[:2] == (step, "lloyd")]
        # the phase's start, then every centre after the (uniform) first one, every iteration
        assert [e[2] for e in init] == [0, *range(2, 21)] and all(e[3] == 20 for e in init)
        assert [e[2] for e in lloyd] == [0, 1, 2, 3, 4, 5] and all("inertia" in e[4] for e in lloyd[1:])


def test_cluster_step_logs_progress_inside_steps(blob_run):
    run, _, _ = blob_run
    run_cluster(run, {"n_clusters": [12, 4], "n_iters": [4, 4], "n_resampling_steps": [1, 0], "in_process": True})
    lines = read_log(run)
    for phase, last in (("init", "12/12 centre (100%)"), ("lloyd", "4/4 iter (100%)")):
        mine = [line for line in lines if f" kmeans/level_1/step_0/{phase} " in line]
        assert len(mine) >= 2 and last in mine[-1], lines  # the first unit and the end, at least
    assert any(" kmeans/level_1/step_1/lloyd " in line for line in lines)


SLOW = P.Calibration(
    dim=16,
    lloyd_gflops_per_thread=1e-6,
    kmeanspp_gflops_per_thread=1e-6,
    baseline_mb=100.0,
    hnsw_search_s_per_row=1e-3,
    hnsw_build_s_per_centroid=1e-3,
)


def test_long_run_warning_names_settings_that_fit():
    kc = KMeansConfig.from_dict({"n_clusters": [40, 8], "in_process": False})
    here = P.Resources(1, 2, 0, 24)
    assert P.plan_kmeans(kc, 1200, 16, here, SLOW).seconds > 3600
    line = P.long_run_warning(kc, 1200, 16, here, SLOW)
    assert line is not None and "\n" not in line and "planned to fit" in line
    assert "kmeans.n_clusters=[" in line and "kmeans.use_gpu=true on" in line
    fast = P.Calibration(dim=16, lloyd_gflops_per_thread=10.0, kmeanspp_gflops_per_thread=5.0, baseline_mb=100.0)
    assert P.long_run_warning(kc, 1200, 16, here, fast) is None


def test_cluster_step_warns_before_level_1(blob_run, tmp_path, monkeypatch, caplog):
    run, _, _ = blob_run
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"16": P.asdict(SLOW)}))
    monkeypatch.setattr(P, "DEFAULT_CALIBRATION", path)
    with caplog.at_level(logging.INFO, logger="pipeline.kmeans.run"):
        result = run_cluster(run, {"n_clusters": [40, 8], "n_iters": [2, 2], "n_resampling_steps": [0, 0]})
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "planned to take" in r.getMessage()]
    assert len(warned) == 1 and warned[0].getMessage() in result["warnings"]
    plan_lines = [r for r in caplog.records if r.getMessage().startswith("k-means plan: N=1,200 D=16")]
    assert plan_lines and plan_lines[0].created <= warned[0].created


def test_plan_models_hnsw_and_sampled_init():
    here = P.Resources(1, 2, 0, 24)
    cal = P.Calibration(
        dim=128,
        lloyd_gflops_per_thread=10.0,
        kmeanspp_gflops_per_thread=5.0,
        baseline_mb=100.0,
        hnsw_search_s_per_row=2e-5,
        hnsw_build_s_per_centroid=5e-5,
    )
    kw = {"n_clusters": [20_000], "n_resampling_steps": [0], "in_process": False, "hnsw_rebuild_every": 4}
    exact = P.plan_kmeans(
        KMeansConfig.from_dict({**kw, "assign": "exact", "init": "kmeans++"}), 200_000, 128, here, cal
    )
    fast = P.plan_kmeans(KMeansConfig.from_dict({**kw, "assign": "auto", "init": "auto"}), 200_000, 128, here, cal)
    assert fast.seconds < exact.seconds / 5
    # by hand: 21 passes of 200,000 rows at 2e-5 s a row on 2 threads, and 6 graph builds (20 Lloyd
    # iterations with a rebuild every 4th: 5, plus the final reassignment) of 20,000 centroids at
    # 5e-5 s each, both scaled by ln k / ln 4096; the init is random (budget < k rows)
    scale = math.log(20_000) / math.log(4096)
    by_hand = 21 * 200_000 * 2e-5 * scale / 2 + 6 * 20_000 * 5e-5 * scale
    assert fast.levels[0].seconds == pytest.approx(by_hand)


def test_hnsw_lloyd_is_seeded_and_shard_independent(make_blobs):
    """Same seed, same result on the HNSW path (single-threaded graph insertion), however sharded."""
    x, _ = make_blobs(1500, 16, 15)
    ci = CentroidIndex("hnsw", 1, 16, 40, 16)

    def run(bounds: list[int]) -> np.ndarray:
        shards = [
            Shard(x[a:b], offset=a, centroid_index=ci, threads=2, metric="l2", out_of_core=False)
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        return fit_group(
            LocalGroup(shards),
            90,
            8,
            init="auto",
            metric="l2",
            rng=np.random.default_rng(5),
            init_sample_flops=1e6,
            tol=0.0,
        )[0]

    one = run([0, 1500])
    np.testing.assert_array_equal(one, run([0, 1500]))
    np.testing.assert_allclose(run([0, 700, 1500]), one, rtol=1e-5, atol=1e-6)


def test_lloyd_stops_early_once_inertia_changes_less_than_tol(make_blobs):
    from pipeline.kmeans.algorithm import lloyd

    x, _ = make_blobs(800, 8, 12)
    start = x[np.random.default_rng(3).choice(len(x), 30, replace=False)]
    full = lloyd(LocalGroup([Shard(x, metric="l2", out_of_core=False)]), start, 30, "l2", tol=0.0)[1]
    early = lloyd(LocalGroup([Shard(x, metric="l2", out_of_core=False)]), start, 30, "l2", tol=1e-3)[1]
    t = len(early) - 1
    assert 1 <= t < 29 and early == full[: t + 1]  # the same iterations, cut where the change fell below tol
    assert early[t - 1] - early[t] <= 1e-3 * early[t]
    assert all(a - b > 1e-3 * b for a, b in zip(early[:-2], early[1:-1]))


def test_warm_resampling_starts_from_the_previous_steps_centroids(make_blobs, monkeypatch):
    import pipeline.kmeans.hierarchical as H

    x, _ = make_blobs(600, 8, 10)
    seen = []
    real = H.fit_group

    def spy(group, k, n_iters, **kw):
        seen.append(kw["init"] if isinstance(kw["init"], str) else np.array(kw["init"]))
        return real(group, k, n_iters, **kw)

    monkeypatch.setattr(H, "fit_group", spy)
    for mode in ("fresh", "warm"):
        seen.clear()
        kc = KMeansConfig.from_dict(
            {"n_clusters": [12], "n_resampling_steps": [2], "sample_size": [5], "resample_init": mode, "init": "random"}
        )
        steps = []
        fit_level(
            LocalGroup([Shard(x, metric=kc.metric, out_of_core=False)]),
            kc.levels[0],
            kc,
            1,
            on_step=lambda s, c, *_, out=steps: out.append(c),
        )
        assert seen[0] == "random"
        if mode == "fresh":
            assert seen[1:] == ["random", "random"]
        else:
            for before, start in zip(steps[:-1], seen[1:]):
                np.testing.assert_array_equal(start, before)


def test_reused_graph_equals_exact_lloyd_where_the_graph_search_is_exact(make_blobs):
    from dataclasses import replace

    x, _ = make_blobs(700, 8, 10)
    start = x[np.random.default_rng(2).choice(len(x), 50, replace=False)]
    reuse = replace(WIDE_HNSW, rebuild_every=4)
    out = {}
    for name, ci in (("exact", EXACT), ("reuse", reuse)):
        shard = Shard(x, centroid_index=ci, metric="l2", out_of_core=False)
        out[name] = fit_group(
            LocalGroup([shard]),
            50,
            8,
            init=start,
            metric="l2",
            init_sample_flops=np.inf,
            rng=np.random.default_rng(0),
            tol=0.0,
        )
        if name == "reuse":  # built at iterations 0 and 4, reused (moved vectors) at 1-3 and 5-7
            assert shard._graph[1] == 3
    np.testing.assert_allclose(out["reuse"][0], out["exact"][0], atol=1e-5)
    np.testing.assert_allclose(out["reuse"][1], out["exact"][1], rtol=1e-5)


def test_final_reassignment_keeps_the_fits_centroid_when_the_graph_finds_a_farther_one(make_blobs):
    x, _ = make_blobs(900, 8, 12)
    start = x[np.random.default_rng(4).choice(len(x), 60, replace=False)]
    narrow = CentroidIndex("hnsw", 1, 4, 4, 1)  # a poor graph: many missed neighbours
    shard = Shard(x, centroid_index=narrow, metric="l2", out_of_core=False)
    group = LocalGroup([shard])
    shard.set_active(np.arange(0, 900, 2))  # the fit covers every other row
    c, _ = fit_group(
        group, 60, 4, init=start, metric="l2", init_sample_flops=np.inf, rng=np.random.default_rng(0), tol=0.0
    )
    fit = shard._fit_assign.copy()
    shard.set_active(None)
    shard.assign_all(c, moved=True)
    hinted = shard.assign.copy(), shard.dist.copy()
    shard.assign_all(c)
    plain = shard.assign.copy(), shard.dist.copy()
    d_fit = ((x[::2] - c[fit]) ** 2).sum(1)
    assert np.all(hinted[1][::2] <= d_fit + 1e-4) and np.all(hinted[1] <= plain[1] + 1e-6)
    assert (hinted[1] < plain[1] - 1e-6).any()  # the graph did miss some: the hint mattered
    np.testing.assert_array_equal(hinted[0][1::2], plain[0][1::2])  # rows outside the fit: no hint
