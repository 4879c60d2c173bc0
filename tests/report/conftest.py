"""A small finished run directory built in-process (no Ray): blobs of very different sizes."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.kmeans.run import run_cluster
from pipeline.rundir import RunDir
from pipeline.sampling.run import run_sample

BLOBS = {"forest": 60, "beach": 25, "runway": 6}
COLORS = {"forest": (20, 120, 30), "beach": (230, 210, 150), "runway": (90, 90, 90)}


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path


def _png(color: tuple[int, int, int], size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def build_run(root: Path, *, with_manifest: bool = True, missing_image: str | None = None) -> RunDir:
    """embeddings (3 labelled blobs, PNG files as uris), rejects, duplicates, clusters, manifest."""
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True)
    ids, uris, labels, vecs = [], [], [], []
    for b, (label, n) in enumerate(BLOBS.items()):
        centre = np.zeros(8, np.float32)
        centre[b] = 10.0
        for i in range(n):
            image_id = f"{label}/{i:03d}.png"
            path = images / f"{label}-{i:03d}.png"
            if image_id != missing_image:
                path.write_bytes(_png(COLORS[label]))
            ids.append(image_id)
            uris.append(str(path))
            labels.append(label)
            vecs.append(centre + rng.normal(0, 0.5, 8).astype(np.float32))
    run = RunDir(str(root / "run"))
    table = pa.table({"id": ids, "uri": uris, "label": labels, "embedding": embeddings_to_arrow(np.stack(vecs))})
    (root / "run" / "embeddings").mkdir(parents=True)
    pq.write_table(table.slice(0, 50), root / "run" / "embeddings" / "part-00000.parquet")
    pq.write_table(table.slice(50), root / "run" / "embeddings" / "part-00001.parquet")
    write_parquet_atomic(
        pa.table(
            {
                "id": ["bad/1.jpg", "bad/2.txt", "bad/3.jpg"],
                "uri": ["a", "b", "c"],
                "reason": ["corrupt or truncated: x", "not an image", "corrupt or truncated: y"],
            }
        ),
        run.path("rejects.parquet"),
    )
    (root / "run" / "dedup").mkdir()
    write_parquet_atomic(
        pa.table({"id": ["forest/000.png", "forest/001.png"]}), run.path("dedup", "duplicates.parquet")
    )
    run.update_run_json(
        timings={"embed": 12.5, "dedup": 1.25, "cluster": 3.0, "sample": 0.5},
        counts={"embed": {"read": len(ids) + 3, "kept": len(ids), "rejected": 3}},
    )
    kcfg = {
        "n_clusters": [6, 2],
        "n_iters": [10, 10],
        "n_resampling_steps": [1, 0],
        "sample_size": [3, 2],
        "metric": "l2",
        "n_actors": 0,
    }
    run_cluster(run, kcfg, seed=0)
    if with_manifest:
        run_sample(run, {"target_size": 24, "strategy": "closest", "multiplier": 1}, seed=0)
    return run


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, ray_session) -> RunDir:
    """(k-means fits on Ray actors: the session's Ray.)"""
    return build_run(tmp_path_factory.mktemp("report"), missing_image="runway/005.png")
