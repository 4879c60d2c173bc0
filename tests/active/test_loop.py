"""The loop: budget stop, convergence stop, crash-and-resume equals an uninterrupted run, outputs."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop
from pipeline.active.state import RunDirCheckpoint
from pipeline.rundir import RunDir


def _blobs(n: int = 2000, d: int = 16, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 1.5
    lab = rng.integers(k, size=n)
    return (centers[lab] + rng.normal(size=(n, d))).astype(np.float32), lab


class CrashingOracle(OracleLabeler):
    """Answers like the oracle until batch ``crash_at``, then fails once (a killed process)."""

    def __init__(self, truth: np.ndarray, crash_at: str):
        super().__init__(truth)
        self.crash_at, self.crashed, self.asked = crash_at, False, []

    def label(self, rows, ids, batch):
        self.asked.append((batch, np.asarray(rows).copy()))
        if batch == self.crash_at and not self.crashed:
            self.crashed = True
            raise KeyboardInterrupt("simulated crash mid-round")
        return super().label(rows, ids, batch)


@pytest.mark.parametrize("diversity", ["none", "iterative_proximity", "clustering", "coreset"])
def test_stops_exactly_at_budget(diversity: str) -> None:
    x, lab = _blobs()
    truth = lab == 2
    cfg = ActiveConfig.from_dict(
        {"budget": 0.1, "batch_size": 30, "n_neighbors": 20, "n_random": 10, "diversity": diversity}
    )
    res = run_loop(x, OracleLabeler(truth), cfg, starter_rows=[int(np.flatnonzero(truth)[0])], truth=truth)
    assert res.stop_reason == "budget"
    assert len(res.state.rows) == 200 and len(np.unique(res.state.rows)) == 200
    assert res.state.history[-1]["labeling_effort"] == pytest.approx(0.1)
    # seed = starter + 20 NN + 10 random; then rounds of 30 and a last partial one (200 - 31 = 5 x 30 + 19)
    assert np.bincount(res.state.label_round).tolist() == [31, 30, 30, 30, 30, 30, 19]
    assert res.state.history[-1]["f1"] > 0.8


def test_min_change_stops_early() -> None:
    x, lab = _blobs()
    truth = lab == 5
    cfg = ActiveConfig.from_dict({"budget": 0.5, "batch_size": 20, "min_change": 0.01})
    res = run_loop(x, OracleLabeler(truth), cfg, starter_rows=[int(np.flatnonzero(truth)[0])], truth=truth)
    assert res.stop_reason == "converged"
    assert res.state.history[-1]["changed_share"] < 0.01 and len(res.state.rows) < 1000


def test_crash_mid_round_resumes_to_the_same_result(tmp_path) -> None:
    x, lab = _blobs(seed=3)
    truth = lab == 1
    starter = [int(np.flatnonzero(truth)[3])]
    cfg = ActiveConfig.from_dict(
        {"budget": 0.12, "batch_size": 25, "strategy": "gaussian", "diversity": "clustering", "seed": 4}
    )
    reference = run_loop(x, OracleLabeler(truth), cfg, starter_rows=starter, truth=truth)

    run = RunDir(str(tmp_path / "run"))
    oracle = CrashingOracle(truth, crash_at="active-round-0003")
    with pytest.raises(KeyboardInterrupt):
        run_loop(x, oracle, cfg, starter_rows=starter, truth=truth, checkpoint=RunDirCheckpoint(run, "fingerprint-1"))
    resumed = run_loop(
        x, oracle, cfg, starter_rows=starter, truth=truth, checkpoint=RunDirCheckpoint(run, "fingerprint-1")
    )
    np.testing.assert_array_equal(resumed.state.rows, reference.state.rows)
    np.testing.assert_array_equal(resumed.state.labels, reference.state.labels)
    np.testing.assert_allclose(resumed.probs, reference.probs, atol=1e-6)
    batches = [b for b, _ in oracle.asked]
    assert batches.count("active-seed") == 1 and batches.count("active-round-0003") == 2  # resumed at the crashed round
    first, second = [r for b, r in oracle.asked if b == "active-round-0003"]
    np.testing.assert_array_equal(first, second)
    with pytest.raises(ValueError, match="another configuration"):
        run_loop(x, oracle, cfg, starter_rows=starter, checkpoint=RunDirCheckpoint(run, "fingerprint-2"))


def test_starter_vector_outside_pool_and_scale_mode() -> None:
    x, lab = _blobs(n=3000)
    truth = lab == 0
    outside = x[truth][:1] + 0.01
    cfg = ActiveConfig.from_dict({"budget": 0.06, "scale": {"enabled": True, "fraction": 0.2, "neighbors": 4}})
    res = run_loop(x, OracleLabeler(truth), cfg, starter_vectors=outside, truth=truth)
    assert len(res.state.rows) == 180 and res.state.subsample is not None and len(res.state.subsample) == 600
    assert res.state.history[-1]["positives_retrieved"] > 0.9
    with pytest.raises(ValueError, match="starter"):
        run_loop(x, OracleLabeler(truth), cfg)


def test_job_outputs_on_synthetic_run(tmp_path) -> None:
    import pyarrow as pa

    from pipeline.active.run import run_active
    from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic

    x, lab = _blobs(n=800)
    run = RunDir(str(tmp_path / "run"))
    ids = [f"img{i:04d}" for i in range(len(x))]
    write_parquet_atomic(
        pa.table(
            {
                "id": ids,
                "uri": [f"/nonexistent/{i}.jpg" for i in ids],
                "label": [f"c{v}" for v in lab],
                "embedding": embeddings_to_arrow(x),
            }
        ),
        run.path("embeddings", "part-00000.parquet"),
    )
    cfg = {
        "active": {"budget": 0.2, "batch_size": 16, "n_neighbors": 16, "n_random": 8},
        "starter": {"id": ids[int(np.flatnonzero(lab == 3)[0])]},
        "labeler": {"kind": "oracle"},
        "oracle": {"column": "label", "positive": "c3"},
        "export": {"imagefolder": "none"},
        "seed": 1,
    }
    summary = run_active(run, cfg)
    assert summary["n_pool"] == 800 and summary["n_labeled"] == 160 and summary["labeling_effort"] == pytest.approx(0.2)
    assert {"positives_retrieved", "false_positive_rate", "f1", "rounds"} <= set(summary)
    labels = pq.read_table(run.path("active", "labels.parquet"))
    assert labels.column_names == ["id", "uri", "label", "source", "score", "round"]
    src = np.array(labels.column("source").to_pylist())
    assert (src == "human").sum() == 160 and (src == "model").sum() == summary["n_model_positive"]
    rounds = pq.read_table(run.path("active", "rounds.parquet"))
    assert rounds.num_rows == summary["rounds"] + 1
    assert run_active(run, cfg) == summary  # done marker: the rerun is a no-op


class GuessRecordingOracle(OracleLabeler):
    """Oracle that records the head's guesses the loop hands it before each batch."""

    def __init__(self, truth: np.ndarray):
        super().__init__(truth)
        self.guessed: list[tuple[list[str], np.ndarray]] = []
        self.asked: list[list[str]] = []

    def guess(self, ids, positive):
        self.guessed.append((list(ids), np.asarray(positive, dtype=bool)))

    def label(self, rows, ids, batch):
        self.asked.append(list(ids))
        return super().label(rows, ids, batch)


def test_labeler_gets_the_heads_guess_for_every_batch_before_labeling() -> None:
    x, lab = _blobs()
    truth = lab == 3
    labeler = GuessRecordingOracle(truth)
    cfg = ActiveConfig.from_dict({"budget": 0.1, "batch_size": 30})
    ids = [f"i{i}" for i in range(len(x))]
    res = run_loop(x, labeler, cfg, ids=ids, starter_rows=[int(np.flatnonzero(truth)[0])])
    # every batch after the seed (no head yet) was preceded by the head's guess for exactly its ids
    assert len(labeler.guessed) == len(labeler.asked) - 1 >= 3
    assert [g[0] for g in labeler.guessed] == labeler.asked[1:]
    # once the head is trained its guesses are mostly right on what it is asked about
    rows = np.array([int(i[1:]) for i in labeler.asked[-1]])
    assert (labeler.guessed[-1][1] == truth[rows]).mean() > 0.8
    assert res.stop_reason == "budget"


def test_human_labeler_guess_premarks_the_store(tmp_path) -> None:
    from pipeline.active.labelers import HumanLabeler
    from pipeline.labeler import LabelStore

    store = LabelStore(str(tmp_path / "labels.sqlite"), labels=["positive", "negative"])
    human = HumanLabeler(store, ["a", "b", "c"], ["/a.jpg", "/b.jpg", "/c.jpg"])
    assert human.guess(["a", "c"], np.array([True, False])) == 2
    assert store.guesses(["a", "b", "c"]) == {"a": "positive", "c": "negative"}


def test_imagefolder_export_replaces_the_folder_whole_or_not_at_all(tmp_path) -> None:
    """``active/imagefolder`` goes through the atomic helper: a rerun replaces it whole (no stale file), a
    failing image leaves the previous export and no temporary; only ``unsure`` rows: no folder."""
    import pyarrow as pa
    from PIL import Image

    from pipeline.active.run import export_imagefolder

    files = []
    for i in range(3):
        Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(tmp_path / f"img{i}.png")
        files.append(str(tmp_path / f"img{i}.png"))
    run = RunDir(str(tmp_path / "run"))
    folder = tmp_path / "run" / "active" / "imagefolder"

    def table(uris: list[str], labels: list[str]) -> pa.Table:
        return pa.table({"id": [f"i{k}" for k in range(len(uris))], "uri": uris, "label": labels})

    assert export_imagefolder(run, table(files, ["positive", "negative", "unsure"]), "copy") == {
        "positive": 1,
        "negative": 1,
    }
    (folder / "positive" / "stale.png").write_bytes(b"x")
    assert export_imagefolder(run, table(files[:1], ["negative"]), "copy") == {"negative": 1}
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "negative/" + os.listdir(folder / "negative")[0]
    ]
    with pytest.raises(FileNotFoundError):
        export_imagefolder(run, table([files[1], str(tmp_path / "missing.png")], ["positive"] * 2), "copy")
    assert sorted(os.listdir(folder)) == ["negative"]  # the previous export, untouched
    assert sorted(os.listdir(folder.parent)) == ["imagefolder"]  # no temporary left
    assert export_imagefolder(run, table(files[:1], ["unsure"]), "copy") == {} and not folder.exists()
