"""Synthetic embeddings tables in a run directory, for the k-means and sampling tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.rundir import RunDir


def blobs(n: int, d: int, centres: int, seed: int = 0, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: (n, d) float32 points and their blob labels."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(centres, d)) * 3
    labels = rng.integers(centres, size=n)
    return (mu[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def write_embeddings(run: RunDir, x: np.ndarray, labels: np.ndarray, n_files: int = 3) -> list[str]:
    """Write ``x`` as ``<run>/embeddings/part-*.parquet`` (id, embedding, uri, label); returns ids."""
    ids = [f"img{i:05d}" for i in range(len(x))]
    bounds = np.linspace(0, len(x), n_files + 1).astype(int)
    for f, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table(
            {
                "id": ids[a:b],
                "embedding": embeddings_to_arrow(x[a:b]),
                "uri": [f"mem://{i}" for i in ids[a:b]],
                "label": [f"class{int(v)}" for v in labels[a:b]],
            }
        )
        write_parquet_atomic(table, run.path("embeddings", f"part-{f:05d}.parquet"), row_group_size=97)
    return ids


@pytest.fixture
def make_blobs():
    """The :func:`blobs` generator."""
    return blobs


@pytest.fixture
def blob_run(tmp_path) -> tuple[RunDir, np.ndarray, np.ndarray]:
    """A run directory with 1,200 embeddings (16-D, 12 blobs) in three Parquet files."""
    run = RunDir(str(tmp_path / "run"))
    x, labels = blobs(1200, 16, 12)
    write_embeddings(run, x, labels)
    return run, x, labels
