"""End to end on real data: UC Merced images -> Embedder -> `cluster` + `sample` configs -> manifest."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from jobs._common import to_dict
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.kmeans import run_cluster
from pipeline.rundir import RunDir
from pipeline.sampling import run_sample

CONF = str(Path(__file__).resolve().parents[2] / "conf")
PER_CLASS = 6


@pytest.mark.e2e
def test_cluster_and_sample_ucmerced(ray_session, datasets_dir, tmp_path):
    from pipeline.embed import Embedder

    table = ds.dataset(str(datasets_dir / "ucmerced"), format="parquet").to_table(columns=["id", "label", "image"])
    labels = np.asarray(table.column("label").to_pylist())
    rows = np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in np.unique(labels)])
    subset = table.take(pa.array(rows))
    x = Embedder({"backbone": "efficientnet_lite0", "batch_size": 32}).embed_bytes(subset.column("image").to_pylist())
    run = RunDir(str(tmp_path / "run"))
    write_parquet_atomic(
        pa.table({"id": subset.column("id"), "embedding": embeddings_to_arrow(x),
                  "uri": [f"ucmerced://{i}" for i in subset.column("id").to_pylist()], "label": subset.column("label")}),
        run.path("embeddings", "part-00000.parquet"),
    )
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        ccfg = compose("cluster", overrides=["kmeans.n_clusters=[24,6]", "kmeans.sample_size=[4,2]", "kmeans.n_actors=2"])
        scfg = compose("sample", overrides=["sampling.target_size=42"])
    assert ccfg.kmeans.metric == "cosine" and len(ccfg.kmeans.n_iters) == 2
    summary = run_cluster(run, to_dict(ccfg.kmeans), seed=int(ccfg.seed))
    assert summary["n_points"] == len(rows) == 21 * PER_CLASS
    assert summary["levels"][0]["non_empty"] == 24
    out = run_sample(run, to_dict(scfg.sampling))
    manifest = pq.read_table(run.path("manifest.parquet"))
    assert out["n_selected"] == manifest.num_rows == 42
    assert manifest.column_names[:6] == ["id", "uri", "level_1", "level_2", "distance", "multiplicity"]
    chosen = manifest.column("label").to_pylist()
    # a balanced 25% subset of a balanced pool should still cover most scene classes
    assert len(set(chosen)) >= 15
