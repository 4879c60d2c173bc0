"""The jobs around curation run as processes (`strata <job> ...`) on 24 real UC Merced images.

The Ray jobs join the test session's Ray with `ray.address=`, as they would a cluster, which spares
a Ray start-up per process (`curate` starting its own local Ray is `test_curate.py`). Elsewhere as
processes: `download` (`satellite/`), `index`/`search` (`search/test_e2e.py`), `serve`
(`search/test_serve_job.py`), `label` (`labeler/test_label_job.py`), `evaluate-active`
(`active/test_evaluate.py`), `pretrain` (`ssl/test_pretrain_ray.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.progress import read_log
from pipeline.rundir import RunDir
from tests.processes import run_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLASSES = ("beach", "forest", "parkinglot")
PER_CLASS = 8
ONE_ACTOR = "embed.pool_size=1"  # one model load: the session's Ray has 2 CPUs


@pytest.fixture(scope="module")
def images(tmp_path_factory, datasets_dir) -> tuple[Path, Path]:
    """A folder tree of 8 images of each of 3 UC Merced classes, and a 9th beach image outside it."""
    root = tmp_path_factory.mktemp("jobs")
    table = pq.read_table(
        datasets_dir / "ucmerced", columns=["id", "label", "image"], filters=[("label", "in", CLASSES)]
    )
    reference = root / "reference.jpg"
    for label in CLASSES:
        rows = table.filter(pc.equal(table["label"], label)).slice(0, PER_CLASS + 1).to_pylist()
        (root / "pool" / label).mkdir(parents=True)
        for row in rows[:PER_CLASS]:
            (root / "pool" / row["id"]).write_bytes(row["image"])
        if label == "beach":
            reference.write_bytes(rows[PER_CLASS]["image"])
    assert reference.exists() and sum(1 for p in (root / "pool").rglob("*") if p.is_file()) == 24
    return root / "pool", reference


@pytest.fixture(scope="module")
def session_ray(ray_session) -> str:
    """Address of the test session's Ray, for jobs that connect to a running cluster."""
    return f"ray.address={ray_session.get_runtime_context().gcs_address}"


@pytest.fixture(scope="module")
def embedded(images, session_ray, tmp_path_factory) -> Path:
    pool, _ = images
    run_dir = tmp_path_factory.mktemp("embedded") / "run"
    out = run_job("embed", f"input.path={pool}", f"run_dir={run_dir}", session_ray, ONE_ACTOR)
    assert f"embeddings: {run_dir / 'embeddings'}  (24 kept, 0 rejected" in out
    return run_dir


def test_embed_dedup_cluster_sample_coreset_as_processes(embedded, session_ray):
    run = RunDir(str(embedded))
    emb = pq.read_table(embedded / "embeddings")
    ids = set(emb.column("id").to_pylist())
    assert len(ids) == 24 and emb.schema.field("embedding").type.list_size == 1280  # features=head for curation
    assert run.read_json("run.json")["counts"]["embed"]["read"] == 24

    run_job("dedup", f"run_dir={embedded}", session_ray)
    duplicates = pq.read_table(embedded / "dedup" / "duplicates.parquet").column("id").to_pylist()
    kept = pq.read_table(embedded / "dedup" / "kept.parquet").column("id").to_pylist()
    assert sorted(duplicates + kept) == sorted(ids)  # every embedded id in exactly one

    run_job(
        "cluster",
        f"run_dir={embedded}",
        session_ray,
        "kmeans.n_clusters=[6,2]",
        "kmeans.sample_size=[2,1]",
        "kmeans.n_resampling_steps=[1,1]",
    )
    clusters = run.read_json("run.json")["counts"]["cluster"]
    assert run.is_done("cluster") and clusters["n_points"] == len(kept)
    assert [level["n_clusters"] for level in clusters["levels"]] == [6, 2]

    run_job("sample", f"run_dir={embedded}", "sample.target_size=9")
    manifest = pq.read_table(embedded / "manifest.parquet")
    assert sum(manifest.column("multiplicity").to_pylist()) == 9
    assert set(manifest.column("id").to_pylist()) <= set(kept)
    assert {"level_1", "level_2", "label"} <= set(manifest.column_names)

    run_job("coreset", f"run_dir={embedded}", session_ray, "coreset.size=5")
    coreset = pq.read_table(embedded / "coreset" / "manifest.parquet")
    assert coreset.num_rows == 5 and sorted(coreset.column("coreset_rank").to_pylist()) == [0, 1, 2, 3, 4]
    assert set(coreset.column("id").to_pylist()) <= set(kept)


def test_embed_progress_and_run_record(embedded):
    """The embed step's progress (images done / total, rate, ETA) is in progress.log; run.json holds
    the last job's status, times, code version and host; no FAISS loader lines in the jobs' logs."""
    lines = [line for line in read_log(RunDir(str(embedded))) if " embed " in line]
    assert lines and " embed 24/24 img (100%) " in lines[-1] and " img/s" in lines[-1], lines
    record = RunDir(str(embedded)).read_json("run.json")
    assert record["status"] == "succeeded" and record["error"] is None and record["finished_at"] >= record["started_at"]
    assert record["job"] in {"embed", "dedup", "cluster", "sample", "coreset"} and record["host"] and record["code"]
    job_logs = "".join(p.read_text() for p in (embedded / "logs").rglob("*.log"))
    assert "[strata" in job_logs and "Loading faiss" not in job_logs


@pytest.fixture(scope="module")
def active_run(images, session_ray, tmp_path_factory) -> Path:
    """`strata active` on a fresh run directory (it embeds the pool itself), from an image file."""
    pool, reference = images
    run_dir = tmp_path_factory.mktemp("active") / "run"
    out = run_job(
        "active",
        f"input.path={pool}",
        f"run_dir={run_dir}",
        f"starter.image={reference}",
        "oracle.positive=beach",
        "budget=0.5",
        "active.n_neighbors=6",
        "active.n_random=2",
        "active.batch_size=4",
        session_ray,
        ONE_ACTOR,
    )
    assert f"labels:  {run_dir / 'active' / 'labels.parquet'}" in out
    return run_dir


def test_active_embeds_a_fresh_run_with_stage_features(active_run):
    run = RunDir(str(active_run))
    emb = pq.read_table(active_run / "embeddings")
    # EfficientNet-Lite0 stages from stride 8 on: 40 + 80 + 112 + 192 + 320, not the 1280-d last layer
    assert emb.num_rows == 24 and emb.schema.field("embedding").type.list_size == 744
    record = run.read_json("run.json")
    assert record["config"]["embed"]["features"] == "stages" and record["counts"]["embed"]["dim"] == 744


def test_active_starts_from_a_reference_image_file(active_run):
    labels = pq.read_table(active_run / "active" / "labels.parquet").to_pylist()
    seed = [r for r in labels if r["source"] == "human" and r["round"] == 0]
    # round 0: the reference's 6 nearest neighbours + 2 random images; the reference is not in the pool
    assert len(seed) == 8 and all(not r["id"].startswith("reference") for r in labels)
    beaches = [r for r in seed if r["id"].startswith("beach/")]
    assert len(beaches) >= 6, seed
    assert all(r["label"] == "positive" for r in beaches)
    summary = json.loads((active_run / "active" / "summary.json").read_text())
    assert summary["n_pool"] == 24 and summary["n_labeled"] == 12 and summary["positives_retrieved"] >= 0.75


def test_active_loop_writes_its_rounds_to_progress_log(active_run):
    rounds = [line for line in read_log(RunDir(str(active_run))) if " active/rounds " in line]
    summary = json.loads((active_run / "active" / "summary.json").read_text())
    total = summary["rounds"] + 1  # the seed round and the rounds after it
    assert rounds and f"{total}/{total} round (100%)" in rounds[-1], rounds
    assert "n_labeled=12" in rounds[-1] and "positives_retrieved=" in rounds[-1]
    assert np.all([line[:4].isdigit() and "T" in line.split()[0] for line in rounds])  # timestamped


def test_active_writes_the_run_report_with_its_rounds(active_run):
    html = (active_run / "report.html").read_text()
    assert '<section id="active">' in html and "Positives found" in html
