"""Out-of-core shards (rows spilled to disk, streamed in chunks) give the in-memory result."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.kmeans.algorithm import LocalGroup
from pipeline.kmeans.hierarchical import KMeansConfig, fit_level, gather_level, sort_clusters
from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.kmeans.run import run_cluster
from pipeline.kmeans.shard import ROW_STATE_BYTES, Shard, SpilledRows, resolve_out_of_core
from pipeline.rundir import RunDir

LEVEL_CFG = {
    "n_clusters": [20],
    "n_iters": [5],
    "n_resampling_steps": [2],
    "sample_size": [10],
    "resampling_strategy": ["random"],
}


def _fit(x: np.ndarray, cfg: KMeansConfig, n_shards: int, **shard_kwargs) -> tuple[np.ndarray, object, list[Shard]]:
    bounds = np.linspace(0, len(x), n_shards + 1).astype(int)
    shards = [
        Shard(x[a:b], metric=cfg.metric, offset=a, chunk_mb=cfg.chunk_mb, **shard_kwargs)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    group = LocalGroup(shards)
    centroids = fit_level(group, cfg.levels[0], cfg, 1)
    return centroids, gather_level(group, centroids), shards


@pytest.mark.parametrize(
    ("metric", "strategy", "n_splits", "budget_mb"),
    [
        ("l2", "random", 1, 0.2),  # the 10-per-cluster sample fits the budget: gathered in memory
        ("cosine", "closest", 1, 0.08),  # it does not: spilled to active.npy
        ("cosine", "random", 2, 0.2),  # split mode reads members from the spill file
    ],
)
def test_tiny_budget_gives_the_in_memory_result(make_blobs, metric, strategy, n_splits, budget_mb):
    x, _ = make_blobs(2400, 16, 20, spread=0.6)
    cfg = KMeansConfig.from_dict(
        {
            **LEVEL_CFG,
            "resampling_strategy": [strategy],
            "n_splits": [n_splits],
            "metric": metric,
            "chunk_mb": 0.01,  # 256-row chunks in both modes
        }
    )
    ref_c, ref, _ = _fit(x, cfg, 3, out_of_core=False)
    c, got, shards = _fit(x, cfg, 3, out_of_core=True, memory_budget_mb=budget_mb)
    np.testing.assert_allclose(c, ref_c, atol=1e-6)
    for name in ("assignments", "offsets", "sorted_clusters"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    np.testing.assert_allclose(got.distances, ref.distances, atol=1e-6)
    for s in shards:  # rows streamed through a buffer far smaller than the shard
        assert isinstance(s.rows, SpilledRows) and len(s.rows.buffer) < len(s.rows) / 2
        assert s.assign.dtype == np.int32
    if budget_mb < 0.1:
        shards[0].select_sample(np.full(20, np.inf), np.full(20, 10**9), "closest", 0)  # every row: too big
        assert isinstance(shards[0].xa, SpilledRows)
        with pytest.raises(ValueError, match="strictly increasing"):
            shards[0].set_active(np.arange(len(shards[0].rows))[::-1])
    spill = shards[0]._spill
    assert os.path.exists(os.path.join(spill, "rows.npy"))
    LocalGroup(shards).close()
    assert not os.path.exists(spill)


def test_kmeans_plus_plus_keeps_no_trial_matrix_out_of_core(make_blobs):
    x, _ = make_blobs(3000, 8, 5)
    shard = Shard(x, metric="l2", out_of_core=True, memory_budget_mb=0.5, chunk_mb=0.01)
    shard.pp_reset(x[0])
    phi = shard.pp_trial(x[:4])
    assert shard._trial_d2 is None  # only the 4 candidates are kept
    mem = Shard(x, metric="l2", out_of_core=False, chunk_mb=0.01)
    mem.pp_reset(x[0])
    np.testing.assert_array_equal(phi, mem.pp_trial(x[:4]))
    assert shard.pp_commit(2) == mem.pp_commit(2)
    np.testing.assert_array_equal(shard._min_d2, mem._min_d2)
    shard.close()


def test_budget_resolution_and_errors(make_blobs):
    assert resolve_out_of_core("auto", 1000, 128, None) is False
    assert resolve_out_of_core("auto", 1000, 128, 1000 * (512 + ROW_STATE_BYTES) / 2**20) is False
    assert resolve_out_of_core("auto", 1001, 128, 1000 * (512 + ROW_STATE_BYTES) / 2**20) is True
    assert resolve_out_of_core(True, 1, 1, None) is True
    with pytest.raises(ValueError, match="out_of_core must be"):
        resolve_out_of_core("yes", 1, 1, None)
    x, _ = make_blobs(50_000, 4, 3)
    with pytest.raises(ValueError, match="cannot hold the per-row state of 50000 rows"):
        Shard(x, metric="l2", out_of_core=True, memory_budget_mb=1)
    with pytest.raises(ValueError, match="memory_budget_mb must be > 0"):
        KMeansConfig.from_dict({"n_clusters": [4], "memory_budget_mb": 0})
    with pytest.raises(ValueError, match="out_of_core must be"):
        KMeansConfig.from_dict({"n_clusters": [4], "out_of_core": "sometimes"})


@pytest.fixture(params=["in_process", pytest.param("ray", marks=pytest.mark.slow)])
def backend(request) -> dict:
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        return {"in_process": False}
    return {"in_process": True}


def test_run_cluster_out_of_core_matches_in_memory(backend, tmp_path, blob_run):
    """``strata cluster`` with a budget that forces every level-1 shard out of core: same files."""
    run, _, _ = blob_run
    cfg = {
        "n_clusters": [24, 5],
        "n_iters": [6, 6],
        "n_resampling_steps": [2, 1],
        "sample_size": [6, 3],
        "resampling_strategy": ["random", "closest"],
        "metric": "cosine",
        "chunk_mb": 0.01,  # many chunks per shard, many cluster batches in the merge
        "n_actors": 3,
        **backend,
    }
    ref = run_cluster(run, cfg)
    assert ref["levels"][0]["out_of_core_shards"] == 0
    ooc = RunDir(str(tmp_path / "ooc"))
    ooc.fs.copy(run.local("embeddings"), ooc.local("embeddings"), recursive=True)
    # out_of_core: auto; 400 rows x (16 floats + 64 bytes of state) = 0.05 MB per shard > budget
    summary = run_cluster(ooc, {**cfg, "memory_budget_mb": 0.04})
    assert summary["levels"][0]["out_of_core_shards"] == 3
    assert summary["levels"][0]["n_items"] == 1200
    _, a = load_levels(run)
    _, b = load_levels(ooc)
    for la, lb in zip(a, b):
        for name in ("assignments", "offsets", "sorted_clusters"):
            np.testing.assert_array_equal(getattr(la, name), getattr(lb, name), err_msg=name)
        np.testing.assert_allclose(lb.centroids, la.centroids, atol=1e-6)
        np.testing.assert_allclose(lb.sorted_distances, la.sorted_distances, atol=1e-6)
        # the merged parts are the global CSR: clusters by (cluster, distance, index)
        offsets, members, member_dist = sort_clusters(lb.assignments, lb.distances, len(lb.centroids))
        np.testing.assert_array_equal(lb.offsets, offsets)
        np.testing.assert_array_equal(lb.sorted_clusters, members)
        np.testing.assert_array_equal(lb.sorted_distances, member_dist)
    assert load_point_ids(ooc).equals(load_point_ids(run))
    assert not ooc.exists("_tmp", "cluster_parts", "level_1", "step_0")  # parts are merged, then removed
