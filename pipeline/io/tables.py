"""Arrow/Parquet helpers shared by every stage: embedding columns, file listing, atomic writes.

Embedding tables (``<run_dir>/embeddings/part-*.parquet``) hold one row per kept image:
``id`` (string), ``embedding`` (``fixed_size_list<float32>[D]``) and the carried input columns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path

EMBEDDING = "embedding"


def embeddings_to_arrow(x: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float array -> ``fixed_size_list<float32>[D]`` Arrow array (zero-copy for float32)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def arrow_to_embeddings(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``fixed_size_list<float32>[D]`` (or list<float>) column -> (N, D) float32 numpy array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else 0
        return np.zeros((0, width), dtype=np.float32)
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        width = len(col[0])
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size != len(col) * width:
        raise ValueError("embedding rows have different lengths")
    return flat.reshape(len(col), width)


def list_parquet_files(path: str | Sequence[str]) -> list[str]:
    """Expand a Parquet file, folder (recursive), glob, or list of those into sorted file URIs."""
    if not isinstance(path, str):
        return sorted({f for p in path for f in list_parquet_files(p)})
    fs, root = fsspec.core.url_to_fs(path)
    protocol = "" if _is_local(path) else path.split("://", 1)[0] + "://"
    if any(ch in root for ch in "*?["):
        files = fs.glob(root)
    elif fs.isdir(root):
        files = [f for f in fs.find(root) if f.endswith(".parquet")]
    elif fs.exists(root):
        files = [root]
    else:
        raise FileNotFoundError(f"no Parquet file, folder or glob at {path!r}")
    files = [f for f in files if not os.path.basename(f).startswith((".", "_"))]
    return sorted(protocol + f for f in files)


def read_embeddings(path: str | Sequence[str], columns: Sequence[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """Read an embeddings table: (other columns as Arrow table, (N, D) float32 embeddings)."""
    cols = None if columns is None else [*columns, EMBEDDING]
    tables = []
    for f in list_parquet_files(path):
        with fsspec.open(f, "rb") as fh:
            tables.append(pq.read_table(fh, columns=cols))
    if not tables:
        raise FileNotFoundError(f"no embedding files under {path!r}")
    table = pa.concat_tables(tables)
    x = arrow_to_embeddings(table.column(EMBEDDING))
    return table.drop_columns([EMBEDDING]), x


def iter_embedding_batches(
    path: str | Sequence[str], batch_rows: int = 65536, columns: Sequence[str] = ("id",)
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Stream (columns, embeddings) batches file by file; memory stays ~batch_rows x D."""
    for f in list_parquet_files(path):
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=[*columns, EMBEDDING]):
                t = pa.Table.from_batches([batch])
                yield t.drop_columns([EMBEDDING]), arrow_to_embeddings(t.column(EMBEDDING))


def write_parquet_atomic(table: pa.Table, path: str, **kwargs) -> None:
    """Write ``table`` to ``path`` via a temporary name and rename, so readers never see a partial file."""
    fs, p = fsspec.core.url_to_fs(path)
    with atomic_path(p, fs) as tmp, fs.open(tmp, "wb") as fh:
        pq.write_table(table, fh, **kwargs)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


__all__ = [
    "EMBEDDING",
    "embeddings_to_arrow",
    "arrow_to_embeddings",
    "list_parquet_files",
    "read_embeddings",
    "iter_embedding_batches",
    "write_parquet_atomic",
]
