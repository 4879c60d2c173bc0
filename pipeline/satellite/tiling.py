"""Cut large scenes into ``tile_h x tile_w`` training patches with overlap and a boundary policy.

Windows along one axis of length ``n`` start every ``stride = size - overlap`` pixels. What
happens where the last full window does not reach the edge is the boundary policy:

- ``drop``: only full windows inside the scene (the remainder ``< stride`` is lost);
- ``pad``: windows continue until the scene is covered; the part past the edge is ``pad_value``;
- ``shift``: full windows, plus one last window moved back to end exactly at the edge (it
  overlaps its neighbour more than ``overlap``); a scene shorter than ``size`` falls back to ``pad``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BOUNDARY_POLICIES = ("drop", "pad", "shift")


def axis_starts(n: int, size: int, overlap: int, boundary: str) -> np.ndarray:
    """Window start offsets along an axis of length ``n`` (int64, ascending)."""
    if size <= 0 or n <= 0:
        raise ValueError(f"size and length must be positive, got size={size}, n={n}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size), got overlap={overlap}, size={size}")
    if boundary not in BOUNDARY_POLICIES:
        raise ValueError(f"boundary must be one of {BOUNDARY_POLICIES}, got {boundary!r}")
    stride = size - overlap
    full = np.arange(0, max(n - size + 1, 0), stride, dtype=np.int64)
    if boundary == "drop":
        return full
    if boundary == "shift" and n >= size:
        return full if full[-1] + size == n else np.append(full, n - size)
    # pad: every start whose window covers something the previous window did not
    starts = np.arange(0, n, stride, dtype=np.int64)
    return starts[(starts == 0) | (starts + overlap < n)]


def tile_windows(height: int, width: int, tile_h: int, tile_w: int, overlap: int, boundary: str) -> np.ndarray:
    """``(K, 4)`` int64 windows ``[y0, x0, y1, x1]`` in row-major order; ``y1``/``x1`` may pass the edge (pad)."""
    ys = axis_starts(height, tile_h, overlap, boundary)
    xs = axis_starts(width, tile_w, overlap, boundary)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = yy.reshape(-1), xx.reshape(-1)
    return np.stack([y0, x0, y0 + tile_h, x0 + tile_w], axis=1)


def cut_tiles(image: np.ndarray, windows: np.ndarray, pad_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Patches of ``image`` (``(H, W[, C])``) under ``windows`` from :func:`tile_windows`.

    Returns ``(tiles (K, th, tw[, C]), pad_fraction (K,) float32)`` where ``pad_fraction`` is the
    share of each patch lying outside the image (filled with ``pad_value``).
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 4)
    if len(windows) == 0:
        return np.zeros((0, 0, 0) + image.shape[2:], dtype=image.dtype), np.zeros(0, dtype=np.float32)
    th = int(windows[0, 2] - windows[0, 0])
    tw = int(windows[0, 3] - windows[0, 1])
    if np.any(windows[:, 2] - windows[:, 0] != th) or np.any(windows[:, 3] - windows[:, 1] != tw):
        raise ValueError("all windows must have the same size")
    if windows[:, :2].min() < 0:
        raise ValueError("windows must start inside the image")
    h, w = image.shape[:2]
    need_h, need_w = max(int(windows[:, 2].max()), h), max(int(windows[:, 3].max()), w)
    pad = [(0, need_h - h), (0, need_w - w)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, constant_values=pad_value) if (need_h > h or need_w > w) else image
    view = sliding_window_view(padded, (th, tw), axis=(0, 1))  # (H-th+1, W-tw+1, [C,] th, tw)
    tiles = view[windows[:, 0], windows[:, 1]]
    if image.ndim == 3:
        tiles = np.moveaxis(tiles, 1, -1)
    inside_h = np.clip(h - windows[:, 0], 0, th)
    inside_w = np.clip(w - windows[:, 1], 0, tw)
    pad_fraction = 1.0 - (inside_h * inside_w) / float(th * tw)
    return np.ascontiguousarray(tiles), pad_fraction.astype(np.float32)
