"""run_sample: manifest.parquet from a finished clustering (in-process shards, no Ray needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.kmeans.levels import load_levels
from pipeline.kmeans.run import run_cluster
from pipeline.rundir import RunDir
from pipeline.sampling.run import run_sample


@pytest.fixture
def clustered_run(tmp_path) -> RunDir:
    rng = np.random.default_rng(0)
    sizes = [300, 150, 60, 20, 8]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = (rng.normal(size=(len(sizes), 8))[labels] * 4 + rng.normal(size=(len(labels), 8))).astype(np.float32)
    run = RunDir(str(tmp_path / "run"))
    ids = [f"p{i}" for i in range(len(x))]
    write_parquet_atomic(
        pa.table(
            {
                "id": ids,
                "embedding": embeddings_to_arrow(x),
                "uri": [f"file:///{i}.jpg" for i in ids],
                "label": [f"c{v}" for v in labels],
                "date": ["2024-01-01"] * len(x),
            }
        ),
        run.path("embeddings", "part-00000.parquet"),
    )
    cfg = {"n_clusters": [20, 4], "n_iters": 8, "n_resampling_steps": [2, 1], "sample_size": [4, 2], "in_process": True}
    run_cluster(run, cfg)
    return run


def test_manifest_columns_and_counts(clustered_run):
    run = clustered_run
    summary = run_sample(run, {"target_size": 100, "strategy": "closest", "multiplier": 1, "seed": 1})
    table = pq.read_table(run.path("manifest.parquet"))
    assert table.column_names == ["id", "uri", "level_1", "level_2", "distance", "multiplicity", "label", "date"]
    assert table.schema.field("level_1").type == pa.int64() and table.schema.field("distance").type == pa.float32()
    assert table.schema.field("multiplicity").type == pa.int32()
    assert table.num_rows == 100 == summary["n_selected"]
    assert len(set(table.column("id").to_pylist())) == 100
    assert all(u == f"file:///{i}.jpg" for u, i in zip(table.column("uri").to_pylist(), table.column("id").to_pylist()))
    # cluster ids agree with the stored hierarchy
    _, levels = load_levels(run)
    idx = np.array([int(i[1:]) for i in table.column("id").to_pylist()])
    np.testing.assert_array_equal(table.column("level_1").to_numpy(), levels[0].assignments[idx])
    np.testing.assert_array_equal(table.column("level_2").to_numpy(), levels[1].assignments[levels[0].assignments[idx]])
    # every class of the long tail is represented; the head class is capped
    counts = {
        c: n for c, n in zip(*np.unique(table.column("label").to_numpy(zero_copy_only=False), return_counts=True))
    }
    assert len(counts) == 5 and counts["c0"] < 60
    assert run_sample(run, {"target_size": 100, "strategy": "closest", "multiplier": 1, "seed": 1})["skipped"]


def test_multiplier_and_random_strategy(clustered_run):
    run = clustered_run
    run_sample(run, {"target_size": 700, "strategy": "random", "multiplier": 2, "seed": 0})
    table = pq.read_table(run.path("manifest.parquet"))
    assert int(np.sum(table.column("multiplicity").to_numpy())) == 700
    assert table.column("multiplicity").to_numpy().max() == 2
    with pytest.raises(ValueError, match="target_size"):
        run_sample(run, {"target_size": 10_000, "strategy": "random", "multiplier": 1}, force=True)


def test_sample_needs_clusters(tmp_path):
    with pytest.raises(FileNotFoundError, match="strata cluster"):
        run_sample(RunDir(str(tmp_path / "empty")), {"target_size": 5})
