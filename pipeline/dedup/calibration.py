"""Per-collection calibration of the copy threshold from synthetic copies of the pool's own images.

A fixed threshold does not transfer: how far apart distinct images of a collection lie in pHash
space depends on the collection (texture, size, grey or colour). So the step makes copies of a
seeded sample of the pool's images with every transform it promises to find (:data:`KINDS`),
measures their copy distance to their source, and sets the threshold from two distributions:

- ``C(t)``: share of synthetic copies at distance ``<= t`` (estimated copy recall);
- ``n(t)``: number of pool images whose nearest candidate lies at ``<= t``.

``n(t)`` counts the pool's real copies too. Pairs at ``<= SURE_DISTANCE`` bits are copies on every
collection measured, so the images that are copies are estimated as ``m = n(SURE) / C(SURE)`` and
the share of distinct images matched at ``t`` from the excess over them:

    F(t) = max(0, n(t) - m C(t)) / (N - m),     t* = max{t in [t_min, t_max], t even : F(t) <= alpha}

(``t_min`` when none qualifies). ``C(t*)`` and ``F(t*)`` go to the step's record (run.json). ``m`` is
only as good as ``C(SURE)`` from the sample: in a pool made mostly of copies its error (a few
percent of ``m``) can hide a few distinct matches, and ``t*`` can come out one step high.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KINDS = ("jpeg", "resize", "crop", "flip", "rot90", "colour")
SURE_DISTANCE = 2  # bits of 64: AID and UC Merced hold no distinct pair this close (BENCHMARKS.md)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def synthetic_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> bytes:
    """A copy of RGB ``img`` as a JPEG file: ``jpeg`` (quality 30-80), ``resize`` (40-90% of the side),
    ``crop`` (90-98% of each side at a random offset), ``flip`` (left-right or up-down), ``rot90``
    (90, 180 or 270 degrees), ``colour`` (brightness 0.7-1.3, contrast 0.8-1.25, saturation 0.6-1.4)."""
    w, h = img.size
    if kind == "jpeg":
        return _jpeg(img, int(rng.integers(30, 81)))
    if kind == "resize":
        f = rng.uniform(0.4, 0.9)
        img = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BICUBIC)
    elif kind == "crop":
        cw, ch = round(w * rng.uniform(0.9, 0.98)), round(h * rng.uniform(0.9, 0.98))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
    elif kind == "flip":
        img = ImageOps.mirror(img) if rng.random() < 0.5 else ImageOps.flip(img)
    elif kind == "rot90":
        img = img.rotate(90 * int(rng.integers(1, 4)), expand=True)
    elif kind == "colour":
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.25))
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    else:
        raise ValueError(f"unknown copy kind {kind!r}; known: {KINDS}")
    return _jpeg(img, 90)


def choose_threshold(
    copy_distance: np.ndarray,
    nearest: np.ndarray,
    *,
    min_threshold: int,
    max_threshold: int,
    max_false_match: float,
) -> dict:
    """The threshold ``t*`` of the module doc and the estimates behind it.

    Args:
        copy_distance: (m,) distance of each synthetic copy to its source.
        nearest: (N,) each pool image's smallest distance to another pool image (candidates only).

    Returns:
        ``threshold``, ``recall_estimate`` = C(t*), ``false_match_rate`` = F(t*), ``copy_share`` = m/N.
    """
    copy_distance, nearest = np.asarray(copy_distance), np.asarray(nearest)
    n = max(len(nearest), 1)

    def recall(t: int) -> float:
        return float((copy_distance <= t).mean()) if len(copy_distance) else 0.0

    sure = recall(SURE_DISTANCE)
    copies = min(float((nearest <= SURE_DISTANCE).sum()) / sure, n) if sure > 0 else 0.0

    def false_match(t: int) -> float:
        return max(0.0, float((nearest <= t).sum()) - copies * recall(t)) / max(n - copies, 1.0)

    steps = range(int(min_threshold), int(max_threshold) + 1, 2)
    threshold = max((t for t in steps if false_match(t) <= max_false_match), default=int(min_threshold))
    return {
        "threshold": threshold,
        "recall_estimate": round(recall(threshold), 4),
        "false_match_rate": round(false_match(threshold), 5),
        "copy_share": round(copies / n, 4),
    }
