"""End to end on real UC Merced images: embeddings table (project Embedder, contract columns) ->
`strata index` -> `strata search`, then the service with the real embedder and thumbnails read back
through the images' uris. (No Ray here: the index/search/serve jobs do not use it.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.rundir import RunDir

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _job(name: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", f"jobs.{name}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_index_and_search_real_images(tmp_path, datasets_dir):
    from pipeline.embed.embedder import Embedder
    from pipeline.search.service import SearchService

    shard = sorted((datasets_dir / "ucmerced").glob("part-*.parquet"))[0]
    rows = list(range(0, pq.ParquetFile(shard).metadata.num_rows, 15))  # ~7 images of each class in the shard
    table = pq.read_table(shard).take(rows)
    labels = table.column("label").to_pylist()
    n = len(rows)
    run = RunDir(str(tmp_path / "run"))
    embed_cfg = {"backbone": "efficientnet_lite0", "batch_size": 16}
    x = Embedder(embed_cfg).embed_bytes(table.column("image").to_pylist())
    embeddings = pa.table(
        {
            "id": table.column("id"),
            "embedding": embeddings_to_arrow(x),
            "uri": [f"{shard}#{r}" for r in rows],
            "label": table.column("label"),
        }
    )
    write_parquet_atomic(embeddings, run.path("embeddings", "part-00000.parquet"))
    run.update_run_json(config={"embed": embed_cfg})  # what `strata curate` records

    _job("index", f"run_dir={run.root}", "search=flat", "search.partition_by=[label]", "faiss_threads=1")
    marker = run.marker("index")
    assert marker["n"] == n and marker["kinds"] == ["flat"]
    assert marker["partitions"] == len(set(labels))

    # query by an image file that is in the index: itself first, neighbours mostly of its class
    query_row = 37 % n
    query_file = tmp_path / "query.jpg"
    query_file.write_bytes(table.column("image")[query_row].as_py())
    out = tmp_path / "hits.json"
    proc = _job("search", f"run_dir={run.root}", f"query.image={query_file}", "query.k=5", f"output={out}")
    assert "rank" in proc.stdout and "score" in proc.stdout
    hits = json.loads(out.read_text())["results"]
    assert hits[0]["id"] == table.column("id")[query_row].as_py()
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)

    service = SearchService.from_run(run.root)
    query_label = labels[query_row]
    precision = np.mean(
        [
            np.mean(
                [h["label"] == labels[i] for h in service.search(id=table.column("id")[i].as_py(), k=6)["results"][1:]]
            )
            for i in range(0, n, 3)
        ]
    )
    chance = max(labels.count(lab) for lab in set(labels)) / len(labels)
    assert precision > 2 * chance, (precision, chance)

    filtered = service.search(
        image=table.column("image")[query_row].as_py(), k=4, filters={"label": {"ne": query_label}}, tiles="2x2"
    )
    assert len(filtered["results"]) == 4 and all(h["label"] != query_label for h in filtered["results"])

    thumb = Image.open(io.BytesIO(service.thumbnail(hits[1]["id"], 64)))
    assert thumb.format == "JPEG" and max(thumb.size) == 64

    # parquet output of the CLI
    _job(
        "search", f"run_dir={run.root}", f"query.id={hits[1]['id']}", "query.k=3", f"output={tmp_path / 'hits.parquet'}"
    )
    assert pq.read_table(tmp_path / "hits.parquet").column("id")[0].as_py() == hits[1]["id"]
