"""End to end on UC Merced: dedup (default settings), its report gallery, and coreset on a run
directory of real images.

The embeddings table is built here from the real JPEGs (8x8 RGB thumbnails as features, so the
test needs no model download or Ray); uris use the Parquet-row form the input reader writes
(``part-00000.parquet#<row>``), so dedup loads, hashes and calibrates on the real image bytes.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.coreset.run import run_coreset
from pipeline.dedup.run import run_dedup
from pipeline.io.tables import embeddings_to_arrow, read_embeddings, write_parquet_atomic
from pipeline.progress import read_log
from pipeline.report.data import gather_duplicate_pairs
from pipeline.report.html import _pairs_body
from pipeline.rundir import RunDir

pytestmark = pytest.mark.e2e


def brute_force_radius(x: np.ndarray, picked: np.ndarray) -> float:
    """max_i min_{s in picked} ||x_i - x_s||, in float64 one selected row at a time (no library code)."""
    x = x.astype(np.float64)
    nearest = np.full(len(x), np.inf)
    for s in picked:
        nearest = np.minimum(nearest, np.sqrt(((x - x[s]) ** 2).sum(axis=1)))
    return float(nearest.max())


def thumb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255


@pytest.fixture(scope="module")
def run(datasets_dir, tmp_path_factory) -> RunDir:
    path = sorted((datasets_dir / "ucmerced").glob("part-*.parquet"))[0]
    table = pq.read_table(path, columns=["id", "label", "image"])
    labels = np.asarray(table.column("label").to_pylist())
    rows = np.flatnonzero(np.isin(labels, ["airplane", "beach", "forest"]))
    assert len(rows) >= 150, "expected the airplane, beach and forest classes in the first shard"
    images = table.column("image").to_pylist()
    x = np.stack([thumb(images[r]) for r in rows])
    run = RunDir(str(tmp_path_factory.mktemp("run")))
    write_parquet_atomic(
        pa.table(
            {
                "id": table.column("id").take(pa.array(rows)),
                "embedding": embeddings_to_arrow(x),
                "uri": pa.array([f"{path}#{r}" for r in rows]),
                "label": pa.array(labels[rows]),
            }
        ),
        run.path("embeddings", "part-00000.parquet"),
    )
    return run


def test_dedup_then_coreset(run):
    counts = run_dedup(run, {"seed": 0})  # defaults: exact + near_duplicate (calibrated), semantic off
    dups = pq.read_table(run.path("dedup", "duplicates.parquet"))
    kept = pq.read_table(run.path("dedup", "kept.parquet")).column("id").to_pylist()
    table, x = read_embeddings(run.path("embeddings"))
    ids = table.column("id").to_pylist()
    assert counts["input"] == len(ids) == counts["kept"] + counts["duplicates"]
    assert sorted(kept + dups.column("id").to_pylist()) == sorted(ids)
    pairs = {frozenset(p): k for p, k in zip(zip(dups.column("id").to_pylist(), dups.column("kept_id").to_pylist()), dups.column("kind").to_pylist())}  # fmt: skip
    # Pixel-identical in the original data (README of the shared datasets).
    assert pairs.get(frozenset({"airplane/airplane01.tif", "airplane/airplane02.tif"})) == "exact"
    # Distinct photos of one class (the old fixed-eps semantic dedup removed ~13% of them) stay.
    assert counts["duplicates"] <= 0.02 * len(ids) and counts["semantic"] == 0
    record = run.read_json("run.json")["counts"]["dedup"]["copies"]
    assert record["calibrated"] and record["sample"] == min(1000, len(ids) - counts["exact"])
    assert record["reliable"] and 0 < record["threshold"] <= 1 and record["recall_estimate"] >= 0.9
    # the hashing and copy-detection passes' final lines in progress.log (the copy pass: all but exact copies)
    lines = [line.split(" ", 1)[1] for line in read_log(run)]
    n = len(ids)
    assert any(line.startswith(f"dedup/hash {n}/{n} img (100%)") for line in lines)
    m = n - counts["exact"]
    assert any(line.startswith(f"dedup/copies {m}/{m} img (100%)") for line in lines)
    near = [d for d in dups.to_pylist() if d["kind"] == "near_duplicate"]
    assert all(d["similarity"] == 1 - d["distance"] / 64 for d in near)

    gallery = gather_duplicate_pairs(run, 12, 48)  # the report shows each removed image next to its kept one
    assert len(gallery) == min(12, counts["duplicates"])
    assert all(p.removed.src.startswith("data:image/jpeg;base64,") and p.kept.src for p in gallery)
    assert any({p.removed.id, p.kept.id} == {"airplane/airplane01.tif", "airplane/airplane02.tif"} for p in gallery)
    assert "airplane/airplane02.tif" in _pairs_body(type("D", (), {"duplicate_pairs": gallery})())

    out = run_coreset(
        run, {"method": "per_cluster", "fraction": 0.1, "seed": 0, "per_cluster": {"points_per_cluster": 60}}
    )
    manifest = pq.read_table(run.path("coreset", "manifest.parquet"))
    assert out["selected"] == manifest.num_rows == round(0.1 * counts["kept"])
    for col in ("id", "uri", "level_1", "distance", "multiplicity", "label"):
        assert col in manifest.column_names
    assert manifest.schema.field("level_1").type == pa.int64()
    assert manifest.schema.field("distance").type == pa.float32()
    assert not set(manifest.column("id").to_pylist()) & set(dups.column("id").to_pylist())
    keep_rows = np.isin(ids, kept)
    picked = np.flatnonzero(np.isin(np.asarray(ids)[keep_rows], manifest.column("id").to_pylist()))
    # independent reference: max over kept rows of the L2 distance to the nearest selected row;
    # per_cluster reports a bound (each row's distance to its own cluster's picks), so at least that
    assert brute_force_radius(x[keep_rows], picked) <= out["covering_radius"] * (1 + 1e-5)
    assert run.read_json("run.json")["counts"]["coreset"]["covering_radius"] == out["covering_radius"]
    exact_out = run_coreset(run, {"method": "exact", "fraction": 0.1, "seed": 0})
    manifest = pq.read_table(run.path("coreset", "manifest.parquet"))
    assert manifest.column("coreset_rank").to_pylist() == list(range(manifest.num_rows))
    picked = np.flatnonzero(np.isin(np.asarray(ids)[keep_rows], manifest.column("id").to_pylist()))
    assert brute_force_radius(x[keep_rows], picked) == pytest.approx(exact_out["covering_radius"], rel=1e-4)
    assert run_coreset(run, {"method": "exact", "fraction": 0.1, "seed": 0}) == exact_out  # marker
