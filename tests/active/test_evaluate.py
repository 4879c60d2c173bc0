"""Evaluation protocol: one row per (variant, class, starter), summaries, the evaluate-active job."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import available_jobs
from pipeline.active.config import ActiveConfig
from pipeline.active.evaluate import evaluate_run, protocol_runs, summarize
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.rundir import RunDir
from tests.processes import run_job


def _pool(n: int = 900, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 8)) * 3
    lab = rng.integers(3, size=n)
    return (centers[lab] + rng.normal(size=(n, 8))).astype(np.float32), np.array([f"c{v}" for v in lab])


def test_protocol_rows_and_summary() -> None:
    x, lab = _pool()
    variants = {
        v: ActiveConfig.from_dict({"strategy": v, "budget": 0.1, "batch_size": 16, "n_neighbors": 16, "n_random": 8})
        for v in ("random", "least_confidence")
    }
    runs = protocol_runs(x, lab, variants, n_starters=2, seed=0)
    assert runs.num_rows == 3 * 2 * 2
    assert set(runs.column("class").to_pylist()) == {"c0", "c1", "c2"}
    effort = np.array(runs.column("labeling_effort").to_pylist())
    np.testing.assert_allclose(effort, 0.1)
    summary = {s["variant"]: s for s in summarize(runs)}
    assert summary["least_confidence"]["runs"] == 6
    assert 0.9 <= summary["least_confidence"]["positives_retrieved"] <= 1.0  # well separated blobs
    again = protocol_runs(x, lab, variants, n_starters=2, seed=0)
    assert again.drop_columns(["seconds"]).equals(runs.drop_columns(["seconds"]))


def test_evaluate_active_job_library(tmp_path) -> None:
    assert "evaluate-active" in available_jobs() and "active" in available_jobs()
    x, lab = _pool(600)
    run = RunDir(str(tmp_path / "run"))
    ids = [f"i{i}" for i in range(len(x))]
    write_parquet_atomic(
        pa.table({"id": ids, "uri": ids, "label": lab.tolist(), "embedding": embeddings_to_arrow(x)}),
        run.path("embeddings", "part-00000.parquet"),
    )
    cfg = {
        "active": {"budget": 0.1, "batch_size": 16, "n_neighbors": 16, "n_random": 8},
        "label_column": "label",
        "n_starters": 1,
        "classes": ["c0", "c2"],
        "seed": 0,
        "variants": {"lc": {"strategy": "least_confidence"}},
    }
    summary = evaluate_run(run, cfg)
    assert summary["n_pool"] == 600 and summary["variants"][0]["runs"] == 2
    assert run.is_done("evaluate_active")
    runs = pq.read_table(run.path("evaluate_active", "runs.parquet")).to_pandas()
    assert runs["variant"].tolist() == ["lc", "lc"] and runs["class"].tolist() == ["c0", "c2"]
    assert all(lab[int(s[1:])] == c for s, c in zip(runs["starter"], runs["class"]))  # starter is a positive
    np.testing.assert_allclose(runs["labeling_effort"], 0.1)
    assert (runs["rounds"] > 0).all() and (runs["positives_retrieved"] >= 0.9).all()  # well separated blobs
    assert run.read_json("evaluate_active/summary.json") == summary
    for measure in ("labeling_effort", "positives_retrieved", "false_positive_rate", "f1"):
        assert summary["variants"][0][measure] == pytest.approx(runs[measure].mean())


@pytest.mark.slow
def test_evaluate_active_job_as_a_process(tmp_path) -> None:
    """`strata evaluate-active` on a run that holds embeddings (so no Ray): the protocol's files."""
    x, lab = _pool(300, seed=2)
    run = RunDir(str(tmp_path / "run"))
    ids = [f"i{i}" for i in range(len(x))]
    write_parquet_atomic(
        pa.table({"id": ids, "uri": ids, "label": lab.tolist(), "embedding": embeddings_to_arrow(x)}),
        run.path("embeddings", "part-00000.parquet"),
    )
    out = run_job(
        "evaluate-active",
        f"run_dir={run.root}",
        "n_starters=2",
        "classes=[c1]",
        "budget=0.2",
        "active.n_neighbors=10",
        "active.n_random=5",
        "active.batch_size=10",
        "~variants",
        "+variants={lc: {strategy: least_confidence}, random: {strategy: random}}",
    )
    assert f"runs: {run.path('evaluate_active', 'runs.parquet')}" in out
    runs = pq.read_table(run.path("evaluate_active", "runs.parquet")).to_pandas()
    assert sorted(runs["variant"]) == ["lc", "lc", "random", "random"] and set(runs["class"]) == {"c1"}
    np.testing.assert_allclose(runs["labeling_effort"], 0.2)
    assert all(lab[int(s[1:])] == "c1" for s in runs["starter"])
    summary = run.read_json("evaluate_active/summary.json")
    assert summary["n_pool"] == 300 and [v["variant"] for v in summary["variants"]] == ["lc", "random"]
    assert run.read_json("run.json")["config"]["n_starters"] == 2
