"""Satellite preprocessing as Ray Data map stages (``pipeline.stage.Stage`` subclasses).

Each stage takes a table with an ``image`` column (encoded PNG/JPEG bytes), returns it with the
image replaced where it changed, and records what it did in carried columns. Rows whose image
cannot be decoded pass through unchanged with null statistics (the embed stage rejects them).
Use in Ray Data::

    ds.map_batches(GapFillStage, fn_constructor_kwargs={"method": "linear"}, batch_format="pyarrow",
                   compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=0.5)

or through :func:`apply_preprocess` with the ``preprocess`` config group, where an entry with
``enabled: false`` is skipped (not added to the dataset plan).
"""
from __future__ import annotations

import importlib
from typing import Any, Iterable, Mapping

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

    def __init__(self, fill_value: int = 0, tolerance: int = 8, min_area: int = 64, dilate: int = 1,
                 method: str = "linear", format: str = "same", quality: int = 95):
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

    Adds ``cloud_fraction`` (float32). With ``max_cloud_fraction`` set, rows above it are dropped
    (their ids are the input ids missing from the output); images are never modified.
    """

    name = "cloud_mask"
    inputs = ("image",)
    outputs = ("cloud_fraction",)
    resources = Resources(cpus=0.5)

    def __init__(self, brightness: float = 0.75, whiteness: float = 0.15, dilate: int = 2,
                 max_cloud_fraction: float | None = None):
        self.kwargs = {"brightness": brightness, "whiteness": whiteness, "dilate": dilate}
        self.max_cloud_fraction = max_cloud_fraction

    def process(self, batch: pa.Table) -> pa.Table:
        fractions = []
        for data in batch.column("image").to_pylist():
            rgb = _decode(data)
            fractions.append(None if rgb is None else float(cloud_mask(rgb, **self.kwargs).mean()))
        batch = _replace(batch, "cloud_fraction", pa.array(fractions, pa.float32()))
        if self.max_cloud_fraction is not None:
            keep = [f is None or f <= self.max_cloud_fraction for f in fractions]
            batch = batch.filter(pa.array(keep))
        return batch


class TilingStage(Stage):
    """Cut each image into ``height x width`` patches with ``overlap`` and a boundary policy.

    One output row per patch: ``id`` becomes ``<id>#y<y0>_x<x0>``, adds ``source_id``, ``tile_y``,
    ``tile_x``, ``pad_fraction``; other columns are repeated; if ``lat_min/lat_max/lon_min/lon_max``
    are present they are narrowed to the patch by linear interpolation (exact for EPSG:4326
    scenes). Undecodable rows are dropped.
    """

    name = "tiling"
    inputs = ("id", "image")
    outputs = ("id", "image", "source_id", "tile_y", "tile_x", "pad_fraction")
    resources = Resources(cpus=0.5)

    def __init__(self, width: int = 256, height: int = 256, overlap: int = 0, boundary: str = "shift",
                 pad_value: int = 0, format: str = "png", quality: int = 95):
        tile_windows(height, width, height, width, overlap, boundary)  # validate now, not on a worker
        self.width, self.height, self.overlap, self.boundary = width, height, overlap, boundary
        self.pad_value, self.format, self.quality = pad_value, format, quality

    def process(self, batch: pa.Table) -> pa.Table:
        take, ids, images, ty, tx, pads, fy0, fy1, fx0, fx1 = ([] for _ in range(10))
        for i, (sid, data) in enumerate(zip(batch.column("id").to_pylist(), batch.column("image").to_pylist())):
            rgb = _decode(data)
            if rgb is None:
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
                out = _replace(out, col, pa.array(np.full(out.num_rows, getattr(self, col), dtype=np.int32)))
        return out


def _resolve(path: str) -> type[Stage]:
    module, _, attr = path.rpartition(".")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise TypeError(f"{path} is not a pipeline.stage.Stage subclass")
    return cls


def preprocess_specs(stages: Iterable[Mapping[str, Any]] | None) -> list[tuple[type[Stage], dict[str, Any]]]:
    """``[(StageClass, kwargs)]`` of the enabled entries of a ``preprocess.stages`` config list.

    Each entry: ``{cls: "pipeline.satellite.stages.GapFillStage", kwargs: {...}, enabled: true}``.
    """
    specs = []
    for entry in stages or []:
        entry = dict(entry)
        if not entry.get("enabled", True):
            continue
        if "cls" not in entry:
            raise KeyError(f"preprocess stage entry needs 'cls': {entry}")
        specs.append((_resolve(str(entry["cls"])), dict(entry.get("kwargs") or {})))
    return specs


def apply_preprocess(ds, stages: Iterable[Mapping[str, Any]] | None, *, max_workers: int = 1, batch_size: int = 64):
    """Chain the enabled ``stages`` onto a Ray Dataset (``ds`` returned unchanged when there are none)."""
    import ray

    for cls, kwargs in preprocess_specs(stages):
        ds = ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_format="pyarrow", batch_size=batch_size,
                            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max_workers),
                            num_cpus=cls.resources.cpus)
    return ds
