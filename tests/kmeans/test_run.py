"""run_cluster on Ray actors: distributed == single actor, dedup filter, outputs, resume."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import pipeline.kmeans.run as kmeans_run
from pipeline.io.tables import write_parquet_atomic
from pipeline.kmeans.hierarchical import hierarchical_kmeans
from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.kmeans.run import run_cluster
from pipeline.rundir import RunDir

CFG = {
    "in_process": False,  # on Ray actors unless a test says otherwise (auto would keep these in process)
    "n_clusters": [24, 5],
    "n_iters": [6, 6],
    "n_resampling_steps": [2, 1],
    "sample_size": [6, 3],
    "resampling_strategy": ["random", "closest"],
    "metric": "cosine",
    "chunk_mb": 0.05,  # many chunks per shard
}


@pytest.fixture(params=["ray", "in_process"])
def backend(request) -> dict:
    """Shards on Ray actors, or the same shards inside the test process (no Ray)."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        return {"in_process": False}
    return {"in_process": True}


def _arrays(run: RunDir) -> list[dict[str, np.ndarray]]:
    _, levels = load_levels(run)
    return [vars(lv) for lv in levels]


def _assert_same(a: list[dict], b: list[dict]) -> None:
    for la, lb in zip(a, b):
        for name in ("assignments", "offsets", "sorted_clusters"):
            np.testing.assert_array_equal(la[name], lb[name], err_msg=name)
        np.testing.assert_allclose(la["centroids"], lb["centroids"], atol=1e-6)


def test_actors_match_single_actor_and_in_process(backend, tmp_path, blob_run):
    run, x, _ = blob_run
    summary = run_cluster(run, {**CFG, **backend, "n_actors": 3})
    assert [lv["n_clusters"] for lv in summary["levels"]] == [24, 5]
    assert summary["n_points"] == 1200 and summary["n_dropped_duplicates"] == 0
    distributed = _arrays(run)

    single = RunDir(str(tmp_path / "single"))
    single.fs.copy(run.local("embeddings"), single.local("embeddings"), recursive=True)
    run_cluster(single, {**CFG, **backend, "n_actors": 1})
    _assert_same(distributed, _arrays(single))

    levels = hierarchical_kmeans(x, CFG)  # the in-process API gives the same clustering
    _assert_same(distributed, [vars(lv) for lv in levels])

    ids = load_point_ids(run)
    assert ids.column("index").to_pylist() == list(range(1200))
    assert ids.column("id").to_pylist()[:2] == ["img00000", "img00001"]
    # CSR: every point once, each cluster sorted by distance
    lv1 = distributed[0]
    assert sorted(lv1["sorted_clusters"]) == list(range(1200))
    for c in range(24):
        seg = lv1["sorted_distances"][lv1["offsets"][c] : lv1["offsets"][c + 1]]
        assert np.all(np.diff(seg) >= 0)
    assert run_cluster(run, {**CFG, **backend, "n_actors": 3})["skipped"] is True


def test_duplicates_are_left_out(backend, blob_run):
    run, _, _ = blob_run
    dropped = [f"img{i:05d}" for i in range(0, 1200, 7)]
    write_parquet_atomic(pa.table({"id": dropped}), run.path("dedup", "duplicates.parquet"))
    summary = run_cluster(run, {**CFG, **backend, "n_actors": 2})
    assert summary["n_dropped_duplicates"] == len(dropped)
    ids = set(load_point_ids(run).column("id").to_pylist())
    assert len(ids) == 1200 - len(dropped) and not ids & set(dropped)


def test_resume_after_crash_between_steps_is_identical(backend, tmp_path, blob_run, monkeypatch):
    run, _, _ = blob_run
    run_cluster(run, {**CFG, **backend, "n_actors": 2})
    clean = _arrays(run)

    crashed = RunDir(str(tmp_path / "crashed"))
    crashed.fs.copy(run.local("embeddings"), crashed.local("embeddings"), recursive=True)
    real_save = kmeans_run.save_step_from_shards

    def save_then_crash(r, group, level, step, *args):
        if (level, step) == (1, 2):
            raise RuntimeError("simulated crash")
        return real_save(r, group, level, step, *args)

    monkeypatch.setattr(kmeans_run, "save_step_from_shards", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_cluster(crashed, {**CFG, **backend, "n_actors": 2})
    assert crashed.is_done("cluster/level_1/step_1") and not crashed.is_done("cluster/level_1/step_2")
    monkeypatch.setattr(kmeans_run, "save_step_from_shards", real_save)
    summary = run_cluster(crashed, {**CFG, **backend, "n_actors": 3})  # another worker layout, same result
    assert summary["levels"][0]["steps_run"] == 1
    _assert_same(clean, _arrays(crashed))


def test_split_mode_on_actors_matches_in_process(backend, blob_run):
    run, x, _ = blob_run
    cfg = {**CFG, "n_splits": [4, 1], "split_tasks": 3}
    run_cluster(run, {**cfg, **backend, "n_actors": 2})
    _assert_same(_arrays(run), [vars(lv) for lv in hierarchical_kmeans(x, cfg)])


def test_killed_shard_actor_is_restarted_and_the_step_recomputed(ray_session, tmp_path, blob_run, monkeypatch):
    """A shard actor dies after step 0 of level 1: Ray restarts it (the constructor reloads its
    rows), the driver restores the shards' state and recomputes step 1; the result is unchanged."""
    import ray

    run, _, _ = blob_run
    run_cluster(run, {**CFG, "n_actors": 3})
    clean = _arrays(run)

    killed = RunDir(str(tmp_path / "killed"))
    killed.fs.copy(run.local("embeddings"), killed.local("embeddings"), recursive=True)
    real_fit_level = kmeans_run.fit_level
    state: dict = {}

    def fit_level_then_kill(group, lc, kc, level, **kw):
        if level == 1 and not state:
            real_on_step = kw["on_step"]

            def on_step(step, *args):
                real_on_step(step, *args)
                if step == 0 and not state:
                    state["pid"] = ray.get(group.actors[1].__ray_call__.remote(lambda self: __import__("os").getpid()))
                    ray.kill(group.actors[1], no_restart=False)

            kw["on_step"] = on_step
        return real_fit_level(group, lc, kc, level, **kw)

    monkeypatch.setattr(kmeans_run, "fit_level", fit_level_then_kill)
    summary = run_cluster(killed, {**CFG, "n_actors": 3})
    assert state["pid"] and summary["recovered_shard_failures"] == 1
    assert summary["levels"][0]["steps_run"] == 3
    _assert_same(clean, _arrays(killed))


def test_shard_loss_beyond_the_retry_budget_fails_the_run(ray_session, blob_run, monkeypatch):
    from pipeline.kmeans.algorithm import ShardLost

    run, _, _ = blob_run
    calls = {"n": 0}

    def always_lost(*args, **kwargs):
        calls["n"] += 1
        raise ShardLost("simulated")

    monkeypatch.setattr(kmeans_run, "fit_level", always_lost)
    with pytest.raises(ShardLost):
        run_cluster(run, {**CFG, "n_actors": 2, "max_step_retries": 2})
    assert calls["n"] == 3
    assert not run.is_done("cluster")
