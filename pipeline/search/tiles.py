"""Multi-resolution tile search: cut a query image into grids of tiles and merge by bucket voting.

For grids ``G`` (e.g. ``2x2``, or ``1x1,2x2`` for the whole image plus its quarters) every tile
``t`` queries the index for its top-``k_t`` neighbours; a retrieved row ``r`` collects the vote

    V(r) = sum_t  w(s_t(r))        over the tiles t that retrieved r,

with ``s_t(r)`` the tile's similarity score and ``w`` a positive weight (the score itself for
inner-product / cosine indexes, ``1 / (1 + sqrt(d^2))`` for L2 distances). Rows are ranked by ``V``.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_tiles(spec: str | int | None) -> list[tuple[int, int]]:
    """``"2x2"`` -> ``[(2, 2)]``; ``"1x1,2x2"`` -> ``[(1, 1), (2, 2)]``; ``3`` -> ``[(3, 3)]``; None -> ``[(1, 1)]``."""
    if spec is None or spec == "" or spec == 1:
        return [(1, 1)]
    if isinstance(spec, bool):
        raise ValueError(f"tiles must look like 'NxM', got {spec!r}")
    if isinstance(spec, int):
        spec = f"{spec}x{spec}"
    grids = []
    for part in str(spec).split(","):
        m = _GRID.match(part)
        if not m:
            raise ValueError(f"tiles must look like 'NxM' or 'NxM,PxQ' (e.g. '2x2'), got {spec!r}")
        rows, cols = int(m.group(1)), int(m.group(2))
        if not (1 <= rows <= 16 and 1 <= cols <= 16):
            raise ValueError(f"tile grid {rows}x{cols} out of range (1..16 per side)")
        grids.append((rows, cols))
    return grids


def cut_tiles(image: Image.Image, grids: list[tuple[int, int]]) -> list[Image.Image]:
    """Tiles of ``image`` for every grid, row-major; edges at ``round(i * size / n)`` so tiles cover it."""
    width, height = image.size
    tiles = []
    for rows, cols in grids:
        if rows > height or cols > width:
            raise ValueError(f"image of {width}x{height} pixels is too small for a {rows}x{cols} grid")
        ys = np.rint(np.linspace(0, height, rows + 1)).astype(int)
        xs = np.rint(np.linspace(0, width, cols + 1)).astype(int)
        for r in range(rows):
            for c in range(cols):
                tiles.append(image.crop((int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))))
    return tiles


def vote_weights(scores: np.ndarray, metric: str) -> np.ndarray:
    """Positive voting weight of each retrieved score (see module docstring); 0 for missing (-inf)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if metric == "ip":
        w = np.where(finite, scores, 0.0)
    else:
        w = np.where(finite, 1.0 / (1.0 + np.sqrt(np.maximum(-np.where(finite, scores, 0.0), 0.0))), 0.0)
    return w


def bucket_vote(rows: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum ``weights`` per retrieved row over all tiles; top-``k`` rows by total vote.

    ``rows`` / ``weights``: (T, k_t) with -1 for missing results. Returns ``(k',)`` rows and votes,
    ``k' <= k``; ties keep the lower row number first.
    """
    rows = np.asarray(rows).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    valid = rows >= 0
    uniq, inverse = np.unique(rows[valid], return_inverse=True)
    votes = np.bincount(inverse, weights=weights[valid], minlength=len(uniq))
    order = np.argsort(-votes, kind="stable")[:k]
    return uniq[order], votes[order]


__all__ = ["parse_tiles", "cut_tiles", "vote_weights", "bucket_vote"]
