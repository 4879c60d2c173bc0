"""Sizes of a run's embeddings read from Parquet footers, shared by the k-means step and its plan."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

MIN_POINTS_PER_CLUSTER = 3  # fewer points per level-1 cluster than this is warned about


def row_counts(files: list[str]) -> list[int]:
    """Rows of every Parquet file, from the footers only."""
    counts = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            counts.append(pq.ParquetFile(fh).metadata.num_rows)
    return counts


def embedding_dim(path: str) -> int:
    """Width of the ``embedding`` column of one embeddings file (schema, else its first row)."""
    with fsspec.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        field = pf.schema_arrow.field("embedding")
        if pa.types.is_fixed_size_list(field.type):
            return int(field.type.list_size)
        first = next(pf.iter_batches(batch_size=1, columns=["embedding"]), None)
        return 0 if first is None or not first.num_rows else len(first.column(0)[0])
