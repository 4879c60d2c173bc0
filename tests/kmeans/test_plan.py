"""The k-means capacity plan: memory and actor arithmetic by hand, warnings, calibration, the job."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.kmeans import plan as P
from pipeline.kmeans.config import KMeansConfig
from tests.processes import REPO, STRATA, job_env, run_job

CAL = P.Calibration(dim=64, lloyd_gflops_per_thread=10.0, kmeanspp_gflops_per_thread=5.0, baseline_mb=100.0)
NODE = P.Resources(nodes=2, cpus=4, gpus=0, memory_gb=16)


def kmeans(**over) -> KMeansConfig:
    over.setdefault("in_process", False)  # these plans are about the actors' arithmetic
    cfg = dict(n_clusters=[100, 10], n_iters=[20, 10], n_resampling_steps=[0, 0], sample_size=[5, 5], **over)
    return KMeansConfig.from_dict(cfg)


def test_in_process_auto_keeps_a_small_level_1_in_the_driver_and_a_large_one_on_actors():
    small = P.plan_kmeans(kmeans(in_process="auto"), 8_000, 64, NODE, CAL).levels[0]  # ~2e9 flops
    assert small.actors == 0
    large = P.plan_kmeans(kmeans(in_process="auto"), 4_000_000, 64, NODE, CAL).levels[0]  # ~1e12 flops
    assert large.actors == 8


def test_actor_count_and_memory_in_memory_by_hand():
    plan = P.plan_kmeans(kmeans(chunk_mb=1.0), 80_000, 64, NODE, CAL)
    lv1 = plan.levels[0]
    assert lv1.actors == 8 and lv1.rows_per_actor == 10_000  # one actor per CPU of 2 x 4
    trials = 2 + int(math.log(100))  # 6
    # chunks of 1 MiB // (8 (64 + 100 + 4)) = 780 rows: float64 block + FAISS's 4096 x 100 distance tile
    chunk = 8 * 64 * 780 + 4 * 4096 * 100
    by_hand = 10_000 * (64 * 4 + 48 + 4 * trials) + chunk + 16 * 100 * 64 + 100 * 2**20
    assert lv1.memory_per_actor == pytest.approx(by_hand)
    assert not lv1.out_of_core
    assert plan.levels[1].actors == 0 and plan.levels[1].n_points == 100  # level 2 in the driver
    assert not plan.warnings
    few = P.plan_kmeans(kmeans(chunk_mb=64.0), 8_000, 64, NODE, CAL).levels[0]  # 1,000 rows: one chunk
    assert few.memory_per_actor == pytest.approx(
        1_000 * (64 * 4 + 48 + 4 * trials) + 8 * 64 * 1_000 + 4 * 4096 * 100 + 16 * 100 * 64 + 100 * 2**20
    )


def test_actor_memory_out_of_core_under_budget_by_hand():
    kc = kmeans(chunk_mb=64.0, memory_budget_mb=2.0, n_actors=4)
    plan = P.plan_kmeans(kc, 80_000, 64, NODE, CAL)
    lv1 = plan.levels[0]
    assert lv1.actors == 4 and lv1.out_of_core
    # chunk bytes: (2 MiB - 20,000 x 64 B of per-row state) / 3 = 272,384: Lloyd blocks of 256 rows
    # (the minimum), a read buffer of 272,384 // (8 x 69) = 493 rows
    chunk = 8 * 64 * 256 + 4 * 4096 * 100 + 4 * 64 * 493
    assert lv1.memory_per_actor == pytest.approx(20_000 * 64 + chunk + 16 * 100 * 64 + 100 * 2**20)


def test_time_is_flops_over_measured_throughput():
    plan = P.plan_kmeans(kmeans(), 80_000, 64, NODE, CAL)
    lv1 = plan.levels[0]
    lloyd = 2 * 64 * 80_000 * 100 * 20 + 2 * 64 * 100 * 80_000  # 20 iterations + the final assignment
    pp = 2 * 64 * 80_000 * 100 * 6
    calls = 3 * 100 * P.ASSUMED_RAY_CALL_S
    assert lv1.seconds == pytest.approx(lloyd / (8 * 10e9) + pp / (8 * 5e9) + calls)
    gpu = P.plan_kmeans(kmeans(use_gpu=True), 80_000, 64, P.Resources(2, 4, 2, 16), CAL)
    assert gpu.levels[0].actors == 4 and gpu.device == "gpu"
    assert gpu.levels[0].seconds == pytest.approx((lloyd + pp) / (4 * CAL.gpu_gflops * 1e9) + calls)


def test_warnings_for_small_clusters_and_node_memory():
    small = P.plan_kmeans(kmeans(), 200, 64, NODE, CAL)
    assert len(small.warnings) == 1 and "level 1: 100 clusters for 200 points" in small.warnings[0]
    big = P.plan_kmeans(kmeans(), 10**9, 1024, NODE, CAL)  # 125M rows x 4 KB per actor
    assert any("level 1: an actor needs" in w and "a node has 16.0 GiB" in w for w in big.warnings)
    crowded = P.plan_kmeans(kmeans(), 32_000_000, 64, NODE, CAL)  # 4M rows: 1.5 GiB each, 4 per node fit
    assert not crowded.warnings
    crowded = P.plan_kmeans(kmeans(), 32_000_000, 64, P.Resources(1, 64, 0, 16), CAL)  # 64 x 0.33 GiB
    assert any("64 actors per node need" in w for w in crowded.warnings)
    text = P.format_plan(big, CAL)
    assert "WARNING: level 1: an actor needs" in text and "(assumed)" in text


def test_calibration_stored_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "cal.json"
    cal, fresh = P.load_calibration(path, 32, False)
    assert fresh and cal.lloyd_gflops_per_thread > 0 and cal.kmeanspp_gflops_per_thread > 0
    assert json.loads(path.read_text())["32"]["lloyd_gflops_per_thread"] == cal.lloyd_gflops_per_thread
    monkeypatch.setattr(P, "calibrate", lambda dim: pytest.fail("calibrated again"))
    again, fresh = P.load_calibration(path, 32, False)
    assert not fresh and again == cal


def test_input_size_from_parquet_footers_and_npy(tmp_path):
    x = np.zeros((30, 12), dtype=np.float32)
    for i in range(2):
        write_parquet_atomic(
            pa.table({"id": [str(j) for j in range(15)], "vec": embeddings_to_arrow(x[:15])}),
            str(tmp_path / f"p{i}.parquet"),
        )
    assert P.input_size(str(tmp_path), "vec") == (30, 12)
    np.save(tmp_path / "x.npy", x)
    assert P.input_size(str(tmp_path / "x.npy")) == (30, 12)
    with pytest.raises(ValueError, match="no column 'embedding'"):
        P.input_size(str(tmp_path / "p0.parquet"))


@pytest.mark.slow  # two job processes, ~8 s under load
def test_plan_job_as_a_process_without_ray(tmp_path):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"1024": {**P.asdict(CAL), "dim": 1024}}))
    args = ["plan.n=1000000000", "plan.dim=1024", "kmeans=web_scale", "plan.nodes=16", "plan.gpus=8"]
    args += ["plan.cpus=96", "plan.memory_gb=1800", f"plan.calibration={cal}", f"run_dir={tmp_path / 'run'}"]
    out = run_job("plan", *args, timeout=120)
    assert "N=1,000,000,000 D=1024 on 16 node(s) x 96 CPU, 8 GPU, 1800 GiB (given)" in out
    level1 = next(line.split() for line in out.splitlines() if line.strip().startswith("1 "))
    assert level1[1] == "10,000,000" and level1[5] == "128"  # k, actors (16 nodes x 8 GPUs)
    assert "calibrated" not in out  # the stored calibration was used
    # the same job in one interpreter: Ray is never imported without ray.address
    code = (
        "import sys, runpy; sys.argv = ['strata plan', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('jobs.plan', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('RAY_IMPORTED', 'ray' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=120
    )
    assert "RAY_IMPORTED False" in proc.stdout, proc.stdout + proc.stderr


def test_plan_job_bad_input_is_one_line(tmp_path):
    proc = subprocess.run(
        [STRATA, "plan", f"run_dir={tmp_path}", "plan.calibration=" + str(tmp_path / "c.json")],
        cwd=REPO,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "needs plan.n and plan.dim" in proc.stderr


def test_plan_for_run_uses_a_stored_calibration_only(blob_run, tmp_path):
    run, _, _ = blob_run  # 1,200 rows of width 16
    path = tmp_path / "cal.json"
    assert P.plan_for_run(run, {"n_clusters": [40, 8]}, 0, path) is None  # nothing stored: no calibration here
    path.write_text(json.dumps({"16": {**P.asdict(CAL), "dim": 16}}))
    text = P.plan_for_run(run, {"n_clusters": [40, 8]}, 0, path)
    assert "N=1,200 D=16" in text and "30.0" in text  # 1,200 / 40 points per cluster


def test_random_init_has_no_kmeanspp_work_or_round_trips():
    plan = P.plan_kmeans(kmeans(init="random"), 80_000, 64, NODE, CAL)
    lloyd = 2 * 64 * 80_000 * 100 * 20 + 2 * 64 * 100 * 80_000
    assert plan.levels[0].seconds == pytest.approx(lloyd / (8 * 10e9))
    chunk = 8 * 64 * 780 + 4 * 4096 * 100  # as in memory with k-means++, less its per-row trial distances
    by_hand = 10_000 * (64 * 4 + 48) + chunk + 16 * 100 * 64 + 100 * 2**20
    assert (
        P.plan_kmeans(kmeans(init="random", chunk_mb=1.0), 80_000, 64, NODE, CAL).levels[0].memory_per_actor == by_hand
    )


def test_resources_from_the_connected_ray(ray_session):
    res = P.Resources.from_ray()
    total = ray_session.cluster_resources()
    assert res.nodes == 1 and res.cpus == total["CPU"] and res.gpus == total.get("GPU", 0)
    assert res.memory_gb == pytest.approx(total["memory"] / 2**30)
    assert P.n_actors(kmeans(), res) == int(total["CPU"])  # as pipeline.kmeans.run._n_actors
