"""Exact duplicates: a content hash of the decoded pixels, so re-containered copies (same pixels,
other bytes: PNG vs lossless re-save, stripped metadata) match, and byte-identical files match."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.images import RejectedImage, decode_rgb, pixel_digest
from pipeline.stage import Stage

PIXEL_HASH = "pixel_hash"


def pixel_hash(data: bytes | None) -> str | None:
    """blake2b-128 hex of ``width, height`` and the RGB pixel bytes; None when ``data`` does not decode."""
    try:
        return pixel_digest(decode_rgb(data))
    except RejectedImage:
        return None


def load_images(uris: Sequence[str]) -> list[bytes | None]:
    """Encoded bytes for each uri; ``file.parquet#row`` uris are read once per file, not per row."""
    from pipeline.io.sources import load_image_bytes

    out: list[bytes | None] = [None] * len(uris)
    by_parquet: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for pos, uri in enumerate(uris):
        base, _, frag = uri.partition("#")
        if base.endswith(".parquet") and frag.isdigit():
            by_parquet[base].append((pos, int(frag)))
            continue
        try:
            out[pos] = load_image_bytes(uri)
        except (OSError, KeyError, ValueError):
            out[pos] = None
    for base, rows in by_parquet.items():
        with fsspec.open(base, "rb") as fh:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
            col = (
                "image"
                if "image" in schema.names
                else next(f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
            )
            images = pf.read(columns=[col]).column(col)
        for pos, row in rows:
            out[pos] = images[row].as_py() if row < len(images) else None
    return out


class PixelHashStage(Stage):
    """``image`` (encoded bytes) or ``uri`` -> ``pixel_hash`` (string, null for undecodable input)."""

    name: ClassVar[str] = "pixel_hash"
    outputs: ClassVar[tuple[str, ...]] = (PIXEL_HASH,)

    def process(self, batch: pa.Table) -> pa.Table:
        if "image" in batch.column_names:
            data = batch.column("image").to_pylist()
        elif "uri" in batch.column_names:
            data = load_images(batch.column("uri").to_pylist())
        else:
            raise KeyError(f"stage {self.name!r} needs an 'image' or 'uri' column; got {batch.column_names}")
        return batch.append_column(PIXEL_HASH, pa.array([pixel_hash(d) for d in data], pa.string()))
