"""Each step runs where :func:`pipeline.engine.select_engine` says, and only there: ``local`` (and
``auto`` on a small input) never touches Ray; ``auto`` above the step's threshold goes through the
:class:`~pipeline.engine.RayEngine` and gives the in-process result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import engine
from pipeline.config import load_group
from pipeline.coreset.percluster import per_cluster_k_center
from pipeline.dedup.candidates import candidate_pairs
from pipeline.dedup.config import dedup_config
from pipeline.dedup.perceptual import d4_phash, descriptors
from pipeline.embed import stage as embed_stage
from pipeline.kmeans import plan as kmeans_plan
from pipeline.kmeans.run import run_cluster
from pipeline.rundir import RunDir
from tests.dedup.test_candidates import planted
from tests.kmeans.conftest import blobs, write_embeddings

KMEANS = {"n_clusters": [12, 3], "n_iters": [4, 4], "n_resampling_steps": [1, 0], "n_actors": 2}


@pytest.fixture
def ray_forbidden(monkeypatch) -> None:
    """Every way into Ray raises: the engine's operations and Ray's own task, actor and put calls."""
    import ray

    def boom(*args, **kwargs):
        raise AssertionError("a step chosen to run in process touched Ray")

    for name in ("remote", "put", "get", "init"):
        monkeypatch.setattr(ray, name, boom)
    for name in ("start", "run_tasks", "start_actors"):
        monkeypatch.setattr(engine.RayEngine, name, boom)
    monkeypatch.setitem(engine._STATE, "cluster", False)


@pytest.fixture
def ray_calls(monkeypatch) -> list[str]:
    """Names of the RayEngine operations called (they still run)."""
    calls: list[str] = []
    for name in ("run_tasks", "start_actors"):
        original = getattr(engine.RayEngine, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(engine.RayEngine, name, spy)
    monkeypatch.setitem(engine._STATE, "cluster", False)
    return calls


def _blob_run(path: Path) -> RunDir:
    run = RunDir(str(path))
    x, labels = blobs(300, 8, 6)
    write_embeddings(run, x, labels)
    return run


def _images(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def _copies_cfg(**kw) -> dict:
    return {**dedup_config({})["copies"], "seed": 0, **kw}


@pytest.mark.parametrize("setting", ["local", "auto"])
def test_dedup_copies_in_process_never_touch_ray(ray_forbidden, setting):
    grids = planted(60, 10)
    stats: dict = {}
    candidate_pairs(d4_phash(grids), descriptors(grids), _copies_cfg(engine=setting), stats)
    assert stats["engine"] == "local"


@pytest.mark.parametrize("in_process", [True, "auto"])
def test_kmeans_level_1_in_process_never_touches_ray(ray_forbidden, tmp_path, in_process):
    summary = run_cluster(_blob_run(tmp_path / "run"), {**KMEANS, "in_process": in_process})
    assert summary["n_points"] == 300


def test_coreset_per_cluster_in_process_never_touches_ray(ray_forbidden):
    x, labels = blobs(120, 4, 3)
    picks, _, _ = per_cluster_k_center(
        x, labels, 9, allocation="balanced", metric="l2", device="cpu", seed=0, use_ray=False
    )
    assert len(picks) == 9


@pytest.mark.parametrize("setting", ["local", "auto"])
def test_embed_in_process_never_touches_ray(ray_forbidden, tmp_path, setting):
    run = RunDir(str(tmp_path / "run"))
    input_cfg = {**load_group("input/default"), "path": str(_images(tmp_path / "images"))}
    counts = embed_stage.run_embed(run, input_cfg, {"image_size": 32, "batch_size": 4, "engine": setting})
    assert counts["engine"] == "local" and counts["kept"] == 6


def test_embed_auto_above_its_threshold_takes_the_ray_body(monkeypatch, tmp_path):
    """The body run is the chosen engine's (``EMBED_ON``); the Ray Data body itself is compared with
    the in-process one in tests/e2e/test_curate.py."""
    used: list[str] = []

    def ray_body(*args, **kwargs):
        used.append("ray")
        return embed_stage.embed_local(*args, **kwargs)

    monkeypatch.setitem(embed_stage.EMBED_ON, "ray", ray_body)
    monkeypatch.setattr(engine.RayEngine, "start", lambda self: used.append("start"))
    monkeypatch.setitem(engine._STATE, "cluster", False)
    run = RunDir(str(tmp_path / "run"))
    input_cfg = {**load_group("input/default"), "path": str(_images(tmp_path / "images"))}
    cfg = {"image_size": 32, "batch_size": 4, "engine": "auto", "local_max_images": 5}  # 6 images > 5
    assert embed_stage.run_embed(run, input_cfg, cfg)["engine"] == "ray"
    assert used == ["start", "ray"]


@pytest.mark.slow
def test_dedup_copies_auto_above_the_threshold_run_on_ray(ray_session, ray_calls):
    grids = planted(60, 10)
    hashes, desc = d4_phash(grids), descriptors(grids)
    here: dict = {}
    local = candidate_pairs(hashes, desc, _copies_cfg(engine="auto"), here)
    on_ray: dict = {}
    ray_pairs = candidate_pairs(hashes, desc, _copies_cfg(engine="auto", local_max_images=10), on_ray)
    assert (here["engine"], on_ray["engine"]) == ("local", "ray") and "run_tasks" in ray_calls
    np.testing.assert_array_equal(np.stack(local), np.stack(ray_pairs))


@pytest.mark.slow
def test_kmeans_auto_above_the_threshold_runs_on_ray_actors(ray_session, ray_calls, tmp_path, monkeypatch):
    from pipeline.kmeans.levels import load_levels

    cfg = {**KMEANS, "in_process": "auto", "n_actors": 1}  # one actor: the cheapest Ray start
    small = _blob_run(tmp_path / "small")
    run_cluster(small, cfg)
    assert ray_calls == []
    monkeypatch.setattr(kmeans_plan, "AUTO_IN_PROCESS_FLOP", 0)  # every level 1 is "large" now
    large = _blob_run(tmp_path / "large")
    run_cluster(large, cfg)
    assert ray_calls == ["start_actors"]
    for a, b in zip(load_levels(small)[1], load_levels(large)[1]):
        np.testing.assert_array_equal(a.assignments, b.assignments)
        np.testing.assert_allclose(a.centroids, b.centroids, atol=1e-6)
