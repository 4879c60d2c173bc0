"""Synthetic satellite defects painted over real images: clouds and swath-gap stripes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def paint_clouds(
    rgb: np.ndarray, rng: np.random.Generator, coverage: float = 0.3, softness: float = 0.08, scale: float = 12.0
) -> tuple[np.ndarray, np.ndarray]:
    """Blend soft-edged white cloud blobs covering ~``coverage`` of the image.

    Returns ``(cloudy image, alpha (H, W) in [0, 1])``; alpha is 1 inside thick cloud.
    """
    h, w = rgb.shape[:2]
    field = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=scale)
    field = (field - field.mean()) / (field.std() + 1e-12)
    thr = np.quantile(field, 1.0 - coverage)
    alpha = np.clip((field - thr) / softness + 0.5, 0.0, 1.0)
    cloud = rng.uniform(235, 255, size=3)
    out = (1.0 - alpha[..., None]) * rgb.astype(np.float64) + alpha[..., None] * cloud
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha


def paint_stripes(
    rgb: np.ndarray, rng: np.random.Generator, n: int = 2, width: tuple[int, int] = (6, 16), fill_value: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``n`` slanted constant-``fill_value`` stripes (swath gaps); returns ``(image, mask)``."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(n):
        angle = rng.uniform(-0.5, 0.5)  # radians from horizontal
        centre = rng.uniform(0.2, 0.8) * h
        half = rng.integers(width[0], width[1] + 1) / 2.0
        dist = np.abs((yy - centre) * np.cos(angle) - (xx - w / 2) * np.sin(angle))
        mask |= dist < half
    out = rgb.copy()
    out[mask] = fill_value
    return out, mask
