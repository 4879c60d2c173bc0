"""Satellite preprocessing as Ray Data map stages (``pipeline.stage.Stage`` subclasses).

Each stage takes a table with an ``image`` column (encoded PNG/JPEG bytes), returns it with the
image replaced where it changed, and records what it did in carried columns. Rows whose image
cannot be decoded pass through unchanged with null statistics (the embed stage rejects them).
Use in Ray Data::

    ds.map_batches(CloudMaskStage, fn_constructor_kwargs=load_group("satellite/default")["cloud"],
                   batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=0.5)

or through the ``preprocess`` config group of ``strata curate``/``strata embed``
(``conf/preprocess/satellite.yaml``: entries ``{cls, kwargs, enabled}``; disabled ones are skipped).
Constructors take every setting (no defaults: their values live in ``conf/satellite/default.yaml``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.satellite.codec import decode_rgb_array, encode_array, sniff_format
from pipeline.satellite.composite import cloud_mask
from pipeline.satellite.gapfill import FILL_METHODS, fill_gaps, nodata_mask
from pipeline.satellite.tiling import cut_tiles, tile_windows
from pipeline.stage import Resources, Stage


def _encode_like(original: bytes, rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    return encode_array(rgb, (sniff_format(original) or "png") if fmt == "same" else fmt, quality)


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def _decode(data: bytes | None) -> np.ndarray | None:
    if data is None:
        return None
    try:
        return decode_rgb_array(data)
    except Exception:
        return None


class GapFillStage(Stage):
    """Detect no-data swath gaps and fill them (see :mod:`pipeline.satellite.gapfill`).

    Adds ``gap_filled_fraction`` (float32, share of pixels filled; null if undecodable). Images
    with nothing to fill keep their original bytes; filled ones are re-encoded as ``format``
    (``same``: the input's format).
    """

    name = "gap_fill"
    inputs = ("image",)
    outputs = ("image", "gap_filled_fraction")
    resources = Resources(cpus=0.5)

    def __init__(
        self, *, fill_value: int, tolerance: int, min_area: int, dilate: int, method: str, format: str, quality: int
    ):
        if method not in FILL_METHODS:
            raise ValueError(f"method must be one of {FILL_METHODS}, got {method!r}")
        self.mask_kwargs = {"fill_value": fill_value, "tolerance": tolerance, "min_area": min_area, "dilate": dilate}
        self.method, self.format, self.quality = method, format, quality

    def process(self, batch: pa.Table) -> pa.Table:
        images = batch.column("image").to_pylist()
        fractions: list[float | None] = []
        out: list[bytes | None] = []
        for data in images:
            rgb = _decode(data)
            if rgb is None:
                fractions.append(None)
                out.append(data)
                continue
            mask = nodata_mask(rgb, **self.mask_kwargs)
            if not mask.any() or mask.all():
                fractions.append(0.0)
                out.append(data)
                continue
            out.append(_encode_like(data, fill_gaps(rgb, mask, self.method), self.format, self.quality))
            fractions.append(float(mask.mean()))
        batch = _replace(batch, "image", pa.array(out, pa.binary()))
        return _replace(batch, "gap_filled_fraction", pa.array(fractions, pa.float32()))


class CloudMaskStage(Stage):
    """Per-image cloud fraction (see :func:`pipeline.satellite.composite.cloud_mask`).

    Adds ``cloud_fraction`` (float32; null if undecodable). Rows and images are never dropped or
    modified, so every input stays accounted for; filter on the column downstream.
    """

    name = "cloud_mask"
    inputs = ("image",)
    outputs = ("cloud_fraction",)
    resources = Resources(cpus=0.5)

    def __init__(self, *, brightness: float, whiteness: float, dilate: int):
        self.kwargs = {"brightness": brightness, "whiteness": whiteness, "dilate": dilate}

    def process(self, batch: pa.Table) -> pa.Table:
        fractions = []
        for data in batch.column("image").to_pylist():
            rgb = _decode(data)
            fractions.append(None if rgb is None else float(cloud_mask(rgb, **self.kwargs).mean()))
        return _replace(batch, "cloud_fraction", pa.array(fractions, pa.float32()))


class TilingStage(Stage):
    """Cut each image into ``height x width`` patches with ``overlap`` and a boundary policy.

    One output row per patch: ``id`` becomes ``<id>#y<y0>_x<x0>``, adds ``source_id``, ``tile_y``,
    ``tile_x``, ``pad_fraction``; other columns are repeated; if ``lat_min/lat_max/lon_min/lon_max``
    are present they are narrowed to the patch by linear interpolation (exact for EPSG:4326
    scenes). Undecodable rows pass through as one row (null tile columns) so the embed stage
    can reject them.
    """

    name = "tiling"
    inputs = ("id", "image")
    outputs = ("id", "image", "source_id", "tile_y", "tile_x", "pad_fraction")
    resources = Resources(cpus=0.5)

    def __init__(
        self, *, width: int, height: int, overlap: int, boundary: str, pad_value: int, format: str, quality: int
    ):
        tile_windows(height, width, height, width, overlap, boundary)  # validate now, not on a worker
        self.width, self.height, self.overlap, self.boundary = width, height, overlap, boundary
        self.pad_value, self.format, self.quality = pad_value, format, quality

    def process(self, batch: pa.Table) -> pa.Table:
        take, ids, images, ty, tx, pads, fy0, fy1, fx0, fx1 = ([] for _ in range(10))
        for i, (sid, data) in enumerate(zip(batch.column("id").to_pylist(), batch.column("image").to_pylist())):
            rgb = _decode(data)
            if rgb is None:
                take.append(i), ids.append(sid), images.append(data)
                ty.append(None), tx.append(None), pads.append(None)
                fy0.append(0.0), fy1.append(1.0), fx0.append(0.0), fx1.append(1.0)
                continue
            h, w = rgb.shape[:2]
            windows = tile_windows(h, w, self.height, self.width, self.overlap, self.boundary)
            patches, pad = cut_tiles(rgb, windows, self.pad_value)
            for k, (y0, x0, y1, x1) in enumerate(windows.tolist()):
                take.append(i)
                ids.append(f"{sid}#y{y0}_x{x0}")
                images.append(_encode_like(data, patches[k], self.format, self.quality))
                ty.append(y0), tx.append(x0), pads.append(float(pad[k]))
                fy0.append(y0 / h), fy1.append(y1 / h), fx0.append(x0 / w), fx1.append(x1 / w)
        out = batch.take(pa.array(take, pa.int64()))
        out = _replace(out, "source_id", out.column("id"))
        out = _replace(out, "id", pa.array(ids, pa.string()))
        out = _replace(out, "image", pa.array(images, pa.binary()))
        out = _replace(out, "tile_y", pa.array(ty, pa.int32()))
        out = _replace(out, "tile_x", pa.array(tx, pa.int32()))
        out = _replace(out, "pad_fraction", pa.array(pads, pa.float32()))
        if all(c in out.column_names for c in ("lat_min", "lat_max", "lon_min", "lon_max")):
            lat_min, lat_max = (np.asarray(out.column(c).to_numpy(), dtype=np.float64) for c in ("lat_min", "lat_max"))
            lon_min, lon_max = (np.asarray(out.column(c).to_numpy(), dtype=np.float64) for c in ("lon_min", "lon_max"))
            dlat, dlon = lat_max - lat_min, lon_max - lon_min
            out = _replace(out, "lat_max", pa.array(lat_max - np.asarray(fy0) * dlat))
            out = _replace(out, "lat_min", pa.array(lat_max - np.asarray(fy1) * dlat))
            out = _replace(out, "lon_min", pa.array(lon_min + np.asarray(fx0) * dlon))
            out = _replace(out, "lon_max", pa.array(lon_min + np.asarray(fx1) * dlon))
        for col in ("width", "height"):
            if col in out.column_names:
                size = np.where(
                    pa.array(pads).is_null().to_numpy(zero_copy_only=False),
                    out.column(col).to_numpy(),
                    getattr(self, col),
                )
                out = _replace(out, col, pa.array(size.astype(np.int32)))
        return out
