"""Parquet files (a file, a folder or a glob) with an image-bytes column (``input.image_column``);
uris ``<file>#<row>``. Units are slices of ``input.rows_per_unit`` rows of one row group."""

from __future__ import annotations

import functools
import os
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.formats import InputFormat, register
from pipeline.io.fs import split_uri


def list_units(cfg: Any, path: str) -> list[dict]:
    """One unit per slice of a row group, in file order (``rows`` = ``group:start:length``)."""
    from pipeline.io.tables import list_parquet_files

    fs, p, prefix = split_uri(path)
    units: list[dict] = []
    files = list_parquet_files(path)
    root = p if fs.isdir(p) else os.path.dirname(split_uri(files[0])[1]) if files else p
    for f in files:
        with fsspec.open(f, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        offset = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            for start in range(0, n, cfg.rows_per_unit):
                length = min(cfg.rows_per_unit, n - start)
                units.append(
                    {
                        "kind": "parquet",
                        "file": f,
                        "root": prefix + root,
                        "rows": f"{g}:{start}:{length}",
                        "names": None,
                        "offset": offset + start,
                    }
                )
            offset += n
    return units


def expand(cfg: Any, unit: dict) -> pa.Table:
    with fsspec.open(unit["file"], "rb") as fh:
        group, start, length = (int(v) for v in unit["rows"].split(":"))
        table = pq.ParquetFile(fh).read_row_group(group).slice(start, length)
    col = cfg.image_column
    if col not in table.column_names:
        raise KeyError(
            f"{unit['file']}: no image column {col!r} (columns: {table.column_names}); set input.image_column"
        )
    rows = range(unit["offset"], unit["offset"] + table.num_rows)
    uris = pa.array([f"{unit['file']}#{r}" for r in rows], pa.string())
    if cfg.id_column in table.column_names:
        ids = table.column(cfg.id_column).cast(pa.string())
    else:
        rel = os.path.relpath(split_uri(unit["file"])[1], split_uri(unit["root"])[1]).replace(os.sep, "/")
        ids = pa.array([f"{rel}#{r}" for r in rows], pa.string())
    carried = [c for c in (cfg.columns or table.column_names) if c not in (col, cfg.id_column, "uri")]
    out = {
        "id": ids,
        "uri": uris,
        "image": table.column(col).cast(pa.binary()),
        "_read_error": pa.nulls(table.num_rows, pa.string()),
    }
    out.update({c: table.column(c) for c in carried})
    return pa.table(out)


@functools.lru_cache(maxsize=64)
def _parquet_layout(path: str) -> tuple[np.ndarray, str]:
    """(first row of each row group + total, name of the image-bytes column) of a Parquet file."""
    with fsspec.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        schema = pf.schema_arrow
    column = (
        "image"
        if "image" in schema.names
        else next(f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
    )
    return np.concatenate([[0], np.cumsum(sizes)]), column


@functools.lru_cache(maxsize=2)
def _parquet_row_group(path: str, group: int, column: str) -> pa.ChunkedArray:
    """One row group's image column; cached so that serving neighbouring rows reads it once."""
    with fsspec.open(path, "rb") as fh:
        return pq.ParquetFile(fh).read_row_group(group, columns=[column]).column(column)


def load(base: str, fragment: str) -> bytes:
    """Image bytes of row ``fragment`` of the Parquet file ``base``."""
    row = int(fragment)
    starts, column = _parquet_layout(base)
    group = int(np.searchsorted(starts, row, side="right")) - 1
    if group < 0 or group >= len(starts) - 1:
        raise KeyError(f"row {row} is past the end of {base}")
    return _parquet_row_group(base, group, column)[row - int(starts[group])].as_py()


register(InputFormat("parquet", (".parquet",), list_units, expand, load))
