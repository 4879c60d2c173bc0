"""What dedup computes from the decoded pixels, in one decode per image.

Exact duplicates: a content hash of the decoded pixels, so re-containered copies (same pixels,
other bytes: PNG vs lossless re-save, stripped metadata) match, and byte-identical files match.
Near-duplicates: the grey grid pHash works on (:mod:`pipeline.dedup.perceptual`) and the pixel
count (``keep: largest``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.perceptual import GRID, grey_grid
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


@dataclass
class Signatures:
    """Per image: ``digests`` (pixel hash, None if undecodable), ``grids`` (N, GRID, GRID) uint8 grey
    grids and ``pixels`` (N,) int64 width x height (0 if undecodable)."""

    digests: list[str | None]
    grids: np.ndarray
    pixels: np.ndarray


def image_signatures(data: Sequence[bytes | None]) -> Signatures:
    """Decode each image once and take its pixel hash, grey grid and pixel count."""
    digests: list[str | None] = []
    grids = np.zeros((len(data), GRID, GRID), dtype=np.uint8)
    pixels = np.zeros(len(data), dtype=np.int64)
    for r, blob in enumerate(data):
        try:
            img = decode_rgb(blob)
        except RejectedImage:
            digests.append(None)
            continue
        digests.append(pixel_digest(img))
        grids[r] = grey_grid(img)
        pixels[r] = img.width * img.height
    return Signatures(digests, grids, pixels)


def uri_signatures(uris: Sequence[str], *, chunk: int = 4096) -> Signatures:
    """:func:`image_signatures` of the images at ``uris``, loaded ``chunk`` at a time."""
    parts = [image_signatures(load_images(uris[a : a + chunk])) for a in range(0, len(uris), chunk)]
    if not parts:
        return image_signatures([])
    return Signatures(
        [d for p in parts for d in p.digests],
        np.concatenate([p.grids for p in parts]),
        np.concatenate([p.pixels for p in parts]),
    )
