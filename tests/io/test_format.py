"""`input.format` forces how a path is read, overriding what the file names suggest."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.sources import iter_images


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _read(path, fmt: str) -> pa.Table:
    return pa.concat_tables(list(iter_images({"path": str(path), "format": fmt})))


def test_input_format_overrides_detection(tmp_path):
    rows = {f"r{i}": _png(200 + i) for i in range(4)}
    table = pa.table({"id": list(rows), "image": list(rows.values())})
    pq.write_table(table, tmp_path / "rows.dat")  # Parquet under a name auto-detection reads as one file
    auto = _read(tmp_path / "rows.dat", "auto")
    assert auto.column("id").to_pylist() == ["rows.dat"]
    forced = _read(tmp_path / "rows.dat", "parquet")
    assert dict(zip(forced.column("id").to_pylist(), forced.column("image").to_pylist())) == rows

    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(table.slice(0, 2), shards / "a.parquet")
    pq.write_table(table.slice(2, 2), shards / "b.parquet")
    assert sorted(_read(shards, "auto").column("id").to_pylist()) == sorted(rows)
    as_files = _read(shards, "folder")  # forced: each .parquet file is one (undecodable) input file
    files = dict(zip(as_files.column("id").to_pylist(), as_files.column("image").to_pylist()))
    assert files == {name: (shards / name).read_bytes() for name in ("a.parquet", "b.parquet")}

    with pytest.raises(ValueError, match="unknown input.format"):
        _read(shards, "zip")
