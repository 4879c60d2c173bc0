"""Fault tolerance on real data: dead embedding actor, dead k-means actor, dead driver, partial outputs.

Every disturbed run must end with exactly the manifest of an undisturbed run with the same config.
Processes are killed with SIGKILL (a crash, not a clean shutdown), and only processes this test
session started: the session's own Ray node (`ray start --head` on free ports, see conftest) and
the job subprocesses; Ray workers are found among the descendants of that node's process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.curate import run_curate
from pipeline.io.tables import read_embeddings
from pipeline.rundir import RunDir
from tests.cluster.conftest import (
    FAULT_SETTINGS,
    NO_AUTH,
    REPO,
    curate_config,
    descendants,
    kill_pids,
    wait_for,
    write_subset,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def subset(tmp_path_factory, datasets_dir) -> Path:
    return write_subset(datasets_dir, tmp_path_factory.mktemp("uc4"), per_class=4)


@pytest.fixture(scope="module")
def reference(ray_connected, ray_session, subset, tmp_path_factory) -> Path:
    """An undisturbed run of the same config."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    run_curate(RunDir(str(run_dir)), curate_config(subset, run_dir))
    return run_dir


def _ray_workers(root_pid: int, *names: str) -> list[int]:
    return sorted(
        p for p, cmd in descendants(root_pid).items() if cmd.startswith("ray::") and any(n in cmd for n in names)
    )


def _assert_same_result(run_dir: Path, reference: Path) -> None:
    assert pq.read_table(run_dir / "manifest.parquet").equals(pq.read_table(reference / "manifest.parquet"))


def test_killed_embedding_actor_is_restarted_and_the_result_is_unchanged(
    ray_connected, ray_session, subset, reference, tmp_path
):
    run_dir = tmp_path / "run"
    state: dict = {}

    def kill_one_embedding_actor() -> None:
        try:
            # after the first embedded block is written, while later batches are still queued
            wait_for(lambda: list((run_dir / "_tmp").rglob("*.parquet")), 600, what="first embedded block")
            pids = wait_for(
                lambda: _ray_workers(ray_connected.pid, "EmbedStage", "MapWorker"), 60, what="embedding actor"
            )
            state["embed_finished_first"] = (run_dir / "_markers" / "embed.json").exists()
            kill_pids(pids[:1])
            state["killed"] = pids[0]
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            state["error"] = exc

    killer = threading.Thread(target=kill_one_embedding_actor, daemon=True)
    killer.start()
    run_curate(RunDir(str(run_dir)), curate_config(subset, run_dir))
    killer.join(timeout=60)
    assert "error" not in state, state.get("error")
    assert state.get("killed") and state["embed_finished_first"] is False

    # the retried batch is neither lost nor written twice
    counts = RunDir(str(run_dir)).read_json("run.json")["counts"]["embed"]
    assert counts["read"] == counts["kept"] == 21 * 4
    got, emb = read_embeddings(str(run_dir / "embeddings"), ["id"])
    ref, ref_emb = read_embeddings(str(reference / "embeddings"), ["id"])
    assert got.column("id").to_pylist() == ref.column("id").to_pylist()
    np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-6)
    _assert_same_result(run_dir, reference)


def test_killed_kmeans_actor_is_restarted_and_the_step_recomputed(
    ray_connected, ray_session, subset, reference, tmp_path
):
    """SIGKILL one k-means shard actor while level 1 is iterating: Ray restarts it (reloading its
    shard), the driver restores the shards' state and recomputes the interrupted step; the run
    completes with the undisturbed result, and finished steps are not recomputed."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # reuse the reference embeddings: the embed step is skipped (same input, same config)
    shutil.copytree(reference / "embeddings", run_dir / "embeddings")
    shutil.copy(reference / "rejects.parquet", run_dir / "rejects.parquet")
    (run_dir / "_markers").mkdir()
    shutil.copy(reference / "_markers" / "embed.json", run_dir / "_markers" / "embed.json")
    first_step = run_dir / "_markers" / "cluster" / "level_1" / "step_0.json"
    state: dict = {}

    def kill_one_shard_actor() -> None:
        try:
            # the cluster step's shards (semantic dedup runs k-means shards of its own before it):
            # they exist once they have written the point ids
            wait_for((run_dir / "clusters" / "points").exists, 900, what="cluster step shards")
            pids = wait_for(lambda: _ray_workers(ray_connected.pid, "Shard"), 120, what="k-means shard actors")
            wait_for(first_step.exists, 600, interval=0.005, what="first k-means step marker")
            state["cluster_finished_first"] = (run_dir / "_markers" / "cluster.json").exists()
            state["step_0_mtime"] = first_step.stat().st_mtime_ns
            os.kill(pids[0], signal.SIGKILL)  # raises if that process is already gone
            state["killed"] = pids[0]
        except BaseException as exc:  # noqa: BLE001
            state["error"] = exc

    killer = threading.Thread(target=kill_one_shard_actor, daemon=True)
    killer.start()
    run_curate(RunDir(str(run_dir)), curate_config(subset, run_dir))
    killer.join(timeout=60)
    assert "error" not in state, state.get("error")
    assert state["killed"] and state["cluster_finished_first"] is False
    clusters = RunDir(str(run_dir)).read_json("clusters/clusters.json")
    assert clusters["recovered_shard_failures"] == 1
    assert first_step.stat().st_mtime_ns == state["step_0_mtime"]  # step 0 was finished: not recomputed
    _assert_same_result(run_dir, reference)


def _job_command(subset: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "jobs.curate", f"input.path={subset}", f"run_dir={run_dir}", *FAULT_SETTINGS]


def test_killed_driver_resumes_from_the_last_finished_step(ray_head, subset, reference, tmp_path):
    """The driver (`python -m jobs.curate` connected to the running cluster) is SIGKILLed right after
    the embed step finished; the same command, run again, resumes with the clustering."""
    run_dir = tmp_path / "run"
    env = {**os.environ, **NO_AUTH, "RAY_ADDRESS": ray_head.address, "RAY_USAGE_STATS_ENABLED": "0"}
    embed_marker = run_dir / "_markers" / "embed.json"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as fh:
        driver = subprocess.Popen(_job_command(subset, run_dir), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: embed_marker.exists() or driver.poll() is not None, 900, interval=0.02, what="embed marker")
        assert driver.poll() is None, first_log.read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    assert not (run_dir / "manifest.parquet").exists()
    embedded_at = embed_marker.stat().st_mtime_ns

    rerun = subprocess.run(
        _job_command(subset, run_dir), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-3000:]
    assert "embed: finished before with the same config and inputs; skipping" in output
    assert embed_marker.stat().st_mtime_ns == embedded_at
    _assert_same_result(run_dir, reference)
