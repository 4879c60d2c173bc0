"""What dedup computes from the decoded pixels (its copy signatures), in one decode per image.

Exact duplicates: a content hash of the decoded pixels, so re-containered copies (same pixels,
other bytes: PNG vs lossless re-save, stripped metadata) match, and byte-identical files match.
Near-duplicates: the grey grid pHash works on (:mod:`pipeline.dedup.perceptual`), the pHash of its
8 symmetries and the pixel count (``keep: largest``).

The embed step takes these signatures from the image it decodes anyway and stores them as columns
of ``embeddings/`` (:data:`SIGNATURE_COLUMNS`, fixed-size Arrow types, null for an image without
pixels); so does the import of embeddings with a ``uri`` column. Dedup reads them back with
:func:`read_signatures` and decodes nothing; run directories made before they were stored fall back
to decoding ``uri`` (:func:`uri_signatures`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.artifacts import D4_PHASH, GREY_GRID, PIXEL_COUNT, PIXEL_HASH, SIGNATURE_COLUMNS
from pipeline.dedup.perceptual import GRID, HASH_BYTES, d4_phash, grey_grid
from pipeline.io.images import RejectedImage, decode_rgb, pixel_digest
from pipeline.stage import Stage

SIGNATURE_TYPES = {
    PIXEL_HASH: pa.string(),  # blake2b-128 hex of the decoded pixels (the exact-duplicate key)
    GREY_GRID: pa.binary(GRID * GRID),  # the uint8 grey grid, row-major
    D4_PHASH: pa.binary(8 * HASH_BYTES),  # packed pHash of the grid's 8 symmetries, in d4 order
    PIXEL_COUNT: pa.int64(),  # width x height of the decoded image
}


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
        if uri is None:
            continue
        base, _, frag = uri.partition("#")
        if base.endswith(".parquet") and frag.isdigit():
            by_parquet[base].append((pos, int(frag)))
            continue
        try:
            out[pos] = load_image_bytes(uri)
        except Exception:  # noqa: BLE001 - a missing file, an unknown protocol: this image has no bytes
            out[pos] = None
    for base, rows in by_parquet.items():
        try:
            with fsspec.open(base, "rb") as fh:
                pf = pq.ParquetFile(fh)
                schema = pf.schema_arrow
                col = (
                    "image"
                    if "image" in schema.names
                    else next(f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
                )
                images = pf.read(columns=[col]).column(col)
        except (OSError, StopIteration, pa.ArrowInvalid):
            continue  # a missing or unreadable file: its rows have no bytes
        for pos, row in rows:
            out[pos] = images[row].as_py() if row < len(images) else None
    return out


@dataclass
class Signatures:
    """Per image: ``digests`` (pixel hash, None if undecodable), ``grids`` (N, GRID, GRID) uint8 grey
    grids, ``pixels`` (N,) int64 width x height (0 if undecodable) and ``phash`` (N, 8, HASH_BYTES)
    uint8 pHash of the grids' 8 symmetries (:func:`pipeline.dedup.perceptual.d4_phash`; None: not
    computed)."""

    digests: list[str | None]
    grids: np.ndarray
    pixels: np.ndarray
    phash: np.ndarray | None = None


def image_signature(img: Image.Image) -> tuple[str, np.ndarray, int]:
    """(pixel hash, (GRID, GRID) uint8 grey grid, pixel count) of one decoded image."""
    return pixel_digest(img), grey_grid(img), img.width * img.height


def collect_signatures(parts: Sequence[tuple[str, np.ndarray, int] | None]) -> Signatures:
    """:class:`Signatures` of per-image :func:`image_signature` results (None: no pixels), with the
    D4 pHash of the grids taken in one vectorised pass."""
    grids = np.zeros((len(parts), GRID, GRID), dtype=np.uint8)
    pixels = np.zeros(len(parts), dtype=np.int64)
    digests: list[str | None] = [None] * len(parts)
    for r, part in enumerate(parts):
        if part is not None:
            digests[r], grids[r], pixels[r] = part
    return Signatures(digests, grids, pixels, d4_phash(grids))


def decoded_signature(blob: bytes | None) -> tuple[str, np.ndarray, int] | None:
    """:func:`image_signature` of encoded bytes; None when they do not decode."""
    try:
        return image_signature(decode_rgb(blob))
    except RejectedImage:
        return None


def image_signatures(data: Sequence[bytes | None]) -> Signatures:
    """Decode each image once and take its pixel hash, grey grid, pixel count and D4 pHash."""
    return collect_signatures([decoded_signature(b) for b in data])


def uri_signatures(uris: Sequence[str], *, chunk: int = 4096) -> Signatures:
    """:func:`image_signatures` of the images at ``uris``, loaded ``chunk`` at a time."""
    return concat_signatures([image_signatures(load_images(uris[a : a + chunk])) for a in range(0, len(uris), chunk)])


def concat_signatures(parts: Sequence[Signatures]) -> Signatures:
    if not parts:
        return collect_signatures([])
    phash = None if any(p.phash is None for p in parts) else np.concatenate([p.phash for p in parts])
    return Signatures(
        [d for p in parts for d in p.digests],
        np.concatenate([p.grids for p in parts]),
        np.concatenate([p.pixels for p in parts]),
        phash,
    )


def signature_columns(sig: Signatures) -> dict[str, pa.Array]:
    """The :data:`SIGNATURE_COLUMNS` of ``sig`` as Arrow arrays (null where the image had no pixels)."""
    n = len(sig.digests)
    valid = np.array([d is not None for d in sig.digests], dtype=bool)
    bitmap = None if valid.all() else pa.array(valid).buffers()[1]  # Arrow validity bits
    phash = sig.phash if sig.phash is not None else d4_phash(sig.grids)

    def fixed(values: np.ndarray, name: str) -> pa.Array:
        data = pa.py_buffer(np.ascontiguousarray(values, np.uint8).tobytes())
        return pa.FixedSizeBinaryArray.from_buffers(SIGNATURE_TYPES[name], n, [bitmap, data])

    return {
        PIXEL_HASH: pa.array(sig.digests, pa.string()),
        GREY_GRID: fixed(sig.grids, GREY_GRID),
        D4_PHASH: fixed(phash, D4_PHASH),
        PIXEL_COUNT: pa.array(sig.pixels, pa.int64(), mask=~valid),
    }


def with_signatures(table: pa.Table, sig: Signatures) -> pa.Table:
    """``table`` with its :data:`SIGNATURE_COLUMNS` set to ``sig`` (replaced when present)."""
    table = table.drop_columns([c for c in SIGNATURE_COLUMNS if c in table.column_names])
    for name, column in signature_columns(sig).items():
        table = table.append_column(name, column)
    return table


def has_signatures(schema: pa.Schema) -> bool:
    """Whether ``schema`` carries every signature column with the types this code writes (a grid of
    another size, from another version, does not count)."""
    return all(name in schema.names and schema.field(name).type == t for name, t in SIGNATURE_TYPES.items())


def read_signatures(table: pa.Table) -> Signatures | None:
    """The :class:`Signatures` stored in ``table``'s :data:`SIGNATURE_COLUMNS` (no decoding); None
    when the table lacks them (:func:`has_signatures`). Null rows read as undecodable images."""
    if not has_signatures(table.schema):
        return None
    n = table.num_rows

    def fixed(name: str, shape: tuple[int, ...]) -> np.ndarray:
        col = table.column(name)
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        width = col.type.byte_width
        if n == 0:
            return np.zeros((0, *shape), np.uint8)
        raw = np.frombuffer(col.buffers()[1], np.uint8)[col.offset * width : (col.offset + n) * width]
        out = raw.reshape(n, *shape).copy()
        out[~np.asarray(col.is_valid())] = 0
        return out

    pixels = table.column(PIXEL_COUNT).fill_null(0).to_numpy().astype(np.int64, copy=False)
    grids = fixed(GREY_GRID, (GRID, GRID))
    phash = fixed(D4_PHASH, (8, HASH_BYTES))
    return Signatures(table.column(PIXEL_HASH).to_pylist(), grids, pixels, phash)


class SignatureStage(Stage):
    """``image`` (encoded bytes) or ``uri`` -> :data:`SIGNATURE_COLUMNS` (null for undecodable input)."""

    name: ClassVar[str] = "signatures"
    outputs: ClassVar[tuple[str, ...]] = SIGNATURE_COLUMNS

    def process(self, batch: pa.Table) -> pa.Table:
        if "image" in batch.column_names:
            data = batch.column("image").to_pylist()
        elif "uri" in batch.column_names:
            data = load_images(batch.column("uri").to_pylist())
        else:
            raise KeyError(f"stage {self.name!r} needs an 'image' or 'uri' column; got {batch.column_names}")
        return with_signatures(batch, image_signatures(data))
