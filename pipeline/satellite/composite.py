"""Per-image cloud masks and multi-date cloud-free composites.

Cloud mask (true-colour 8-bit RGB, values scaled to [0, 1]): clouds are bright and spectrally
flat. With the visible mean ``m = (R + G + B) / 3`` and the whiteness index of Fmask
(Zhu & Woodcock 2012) ``W = sum_c |c - m| / m``, a pixel is cloudy when

    m > brightness  and  W < whiteness

(defaults 0.75 and 0.15: thick cloud has ``m ~ 0.8-1`` and ``W < 0.1``; bright saturated soil and
vegetation fail the whiteness test. On clear UC Merced / AID aerial scenes, which are much brighter
and greyer than 250 m MODIS scenes, these defaults flag 5-8 % of pixels on average, mostly
concrete and sand). The mask is dilated by ``dilate`` pixels to catch the thin,
darker cloud edges. Bright white man-made surfaces (roofs, snow) also pass; the composite copes
because they are "cloudy" on every date and then fall back to all observations.

Composite over ``T`` co-registered dates ``I_t`` with cloud masks ``C_t`` and no-data masks ``N_t``:

- ``median``: ``out(p) = median{ I_t(p) : not C_t(p), not N_t(p) }`` per channel; where no clear
  observation exists it falls back to the darkest valid one.
- ``darkest``: ``out(p) = I_{t*}(p)``, ``t* = argmin_t m_t(p)`` over valid observations (classic
  minimum-brightness compositing: removes clouds but picks cloud shadows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import ndimage

from pipeline.satellite.codec import decode_rgb_array, encode_array
from pipeline.satellite.gapfill import nodata_mask

COMPOSITE_METHODS = ("median", "darkest")


def cloud_mask(rgb: np.ndarray, *, brightness: float, whiteness: float, dilate: int) -> np.ndarray:
    """``(..., H, W)`` bool cloud mask of ``(..., H, W, 3)`` uint8 images."""
    if rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB images (..., H, W, 3), got shape {rgb.shape}")
    x = rgb.astype(np.float32) / 255.0
    mean = x.mean(axis=-1)
    white = np.abs(x - mean[..., None]).sum(axis=-1) / np.maximum(mean, 1e-6)
    mask = (mean > brightness) & (white < whiteness)
    if dilate > 0 and mask.any():
        structure = np.zeros((3,) * mask.ndim, dtype=bool)
        structure[(1,) * (mask.ndim - 2)] = np.ones((3, 3), dtype=bool)  # dilate within each image only
        mask = ndimage.binary_dilation(mask, structure=structure, iterations=int(dilate))
    return mask


def composite(
    stack: np.ndarray, cloud: np.ndarray, nodata: np.ndarray | None, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free composite of ``stack`` ``(T, H, W, 3)`` uint8.

    ``cloud`` and ``nodata`` (``None``: every pixel valid) are ``(T, H, W)`` bool. Returns ``(image (H, W, 3) uint8,
    clear_count (H, W) int32)`` where ``clear_count`` is the number of clear observations per pixel.
    """
    if method not in COMPOSITE_METHODS:
        raise ValueError(f"composite method must be one of {COMPOSITE_METHODS}, got {method!r}")
    if stack.ndim != 4 or stack.shape[-1] != 3 or len(stack) == 0:
        raise ValueError(f"expected a (T, H, W, 3) stack with T >= 1, got shape {stack.shape}")
    if cloud.shape != stack.shape[:3]:
        raise ValueError(f"cloud mask shape {cloud.shape} does not match stack {stack.shape[:3]}")
    nodata = np.zeros(cloud.shape, dtype=bool) if nodata is None else nodata
    valid = ~nodata
    clear = valid & ~cloud
    clear_count = clear.sum(axis=0).astype(np.int32)

    brightness = stack.astype(np.float32).mean(axis=-1)
    brightness = np.where(valid, brightness, np.inf)  # no-data never wins darkest
    darkest_t = brightness.argmin(axis=0)
    darkest = np.take_along_axis(stack, darkest_t[None, ..., None], axis=0)[0]
    if method == "darkest":
        return darkest, clear_count

    values = np.where(clear[..., None], stack.astype(np.float32), np.nan)
    out = darkest.copy()
    has_clear = clear_count > 0
    if has_clear.any():
        med = np.nanmedian(values[:, has_clear], axis=0)
        out[has_clear] = np.clip(np.rint(med), 0, 255).astype(np.uint8)
    return out, clear_count


def composite_table(
    table: pa.Table,
    *,
    method: str,
    cloud: dict,
    nodata: dict | None,
    image_format: str,
    quality: int,
) -> pa.Table:
    """One composite row per ``location`` of a downloader table (rows of several dates).

    ``cloud`` are :func:`cloud_mask` kwargs; ``nodata`` are :func:`pipeline.satellite.gapfill.nodata_mask`
    kwargs (``None``: every pixel valid). Output columns: ``id`` (``<location>/composite``),
    ``location``, ``image``, ``date`` (``first/last``), ``n_dates``, ``clear_fraction`` (pixels with
    at least one clear observation), ``cloud_fraction`` (``1 - clear_fraction``: pixels left from
    the darkest fallback), ``composite_method``, and the first row's remaining carried columns.
    """
    for col in ("location", "image", "date"):
        if col not in table.column_names:
            raise KeyError(f"composite needs column {col!r}; got {table.column_names}")
    table = table.sort_by([("location", "ascending"), ("date", "ascending")])
    locations = table.column("location").to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, locations[1:] != locations[:-1]])
    ends = np.r_[starts[1:], len(locations)]
    images = table.column("image").to_pylist()
    dates = table.column("date").to_pylist()
    rows, firsts = [], []
    for s, e in zip(starts, ends):
        stack = np.stack([decode_rgb_array(images[i]) for i in range(s, e)])
        clouds = cloud_mask(stack, **cloud)
        gaps = None if nodata is None else np.stack([nodata_mask(im, **nodata) for im in stack])
        image, clear_count = composite(stack, clouds, gaps, method)
        clear = float((clear_count > 0).mean())
        rows.append(
            {
                "id": f"{locations[s]}/composite",
                "image": encode_array(image, image_format, quality),
                "date": f"{dates[s]}/{dates[e - 1]}",
                "n_dates": int(e - s),
                "clear_fraction": clear,
                "cloud_fraction": 1.0 - clear,
                "composite_method": method,
            }
        )
        firsts.append(int(s))
    carried = table.take(pa.array(firsts, pa.int64())).drop_columns(
        [c for c in ("id", "image", "date", "cloud_fraction", "gap_filled_fraction") if c in table.column_names]
    )
    out = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("id", pa.string()),
                ("image", pa.binary()),
                ("date", pa.string()),
                ("n_dates", pa.int32()),
                ("clear_fraction", pa.float32()),
                ("cloud_fraction", pa.float32()),
                ("composite_method", pa.string()),
            ]
        ),
    )
    for name in carried.column_names:
        out = out.append_column(name, carried.column(name))
    return out
