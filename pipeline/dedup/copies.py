"""Near-duplicates (copies): candidate pairs by hash bands and an inverted-file index, verified by
the residual of the registered grey grids.

A copy is the same picture re-encoded, resized, slightly cropped, flipped or rotated by 90 degrees,
or shifted in colour or brightness. Each image carries its grey grid and the pHash of its 8
symmetries (:mod:`pipeline.dedup.perceptual`). Candidate pairs come from
:mod:`pipeline.dedup.candidates` (hash bands and a descriptor kNN, linear in N).

Verification (:func:`copy_scores`): the two grids are registered (the smaller field of view, any of
the 8 orientations, against windows of the other grid enlarged by ``1/sx``, ``1/sy``; best
normalised cross-correlation) and compared as standardised images ``u = (g - mean) / std``:

    residual = max_blocks mean_{pixels in block} |u_a - u_b|      (4 x 4-pixel blocks of the 32 grid)

JPEG noise, resampling and affine colour changes spread thin over the image and average out in a
block; a stroke or an object that one image has and the other lacks does not. pHash bits alone
cannot tell small grey images of simple objects apart (distinct digits lie 2-4 bits apart), this
residual can (BENCHMARKS.md, issue 27). The pHash copy distance ``min(direct, aligned)`` is kept as
the pair's recorded ``distance``.
"""

from __future__ import annotations

import numpy as np

from pipeline.dedup.candidates import TASK_CPUS, codes64
from pipeline.dedup.perceptual import (
    CROP_SCALES,
    GRID,
    d4,
    hamming,
    phash_bits,
    unit_rows,
    window_count,
    window_grid,
    windows,
)
from pipeline.engine import LOCAL, Engine

RESIDUAL_BLOCK = 4  # pixels of the 32-grid per side of a residual block


def standardised(grids: np.ndarray) -> np.ndarray:
    """(P, GRID, GRID) float32 ``(g - mean) / std`` of each grid."""
    p = len(grids)
    return (unit_rows(np.asarray(grids, np.float32).reshape(p, -1)) * GRID).reshape(p, GRID, GRID)


def block_residual(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) float32 max over ``RESIDUAL_BLOCK``-pixel blocks of the mean ``|u_a - u_b|`` of standardised
    (P, GRID, GRID) grids (see module doc)."""
    d = np.abs(standardised(a) - standardised(b))
    nb = GRID // RESIDUAL_BLOCK
    return d.reshape(len(d), nb, RESIDUAL_BLOCK, nb, RESIDUAL_BLOCK).mean(axis=(2, 4)).max(axis=(1, 2))


def descriptor_correlation(desc: np.ndarray, i: np.ndarray, j: np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """(P,) float32 best correlation over the 8 symmetries of the block descriptors of each pair."""
    out = np.empty(len(i), np.float32)
    for a in range(0, len(i), chunk):
        s = slice(a, a + chunk)
        out[s] = np.einsum("pgd,pd->pg", desc[i[s]], desc[j[s], 0]).max(axis=1)
    return out


def copy_scores(
    hashes: np.ndarray,
    grids: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    register: np.ndarray | None = None,
    scales: tuple[float, ...] = CROP_SCALES,
    chunk: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """(bits (P,) int64 pHash copy distance, residual (P,) float32) of each pair.

    Direct scores (every pair, vectorised): the symmetry of ``i`` that correlates best with ``j``,
    its pHash distance and block residual. Registered scores (pairs where ``register`` is True,
    default all; :func:`_registered`): the same after registration over the crop ``scales``
    (:func:`pipeline.dedup.perceptual.windows`). Each score is the smaller of the two. ``chunk`` pairs
    at a time (~40 kB each).
    """
    from threadpoolctl import threadpool_limits

    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    bits = np.zeros(len(i), np.int64)
    residual = np.zeros(len(i), np.float32)
    codes = codes64(hashes)
    nb = GRID // RESIDUAL_BLOCK
    for a in range(0, len(i), chunk):
        s = slice(a, a + chunk)
        # a symmetry permutes pixels: standardising the grid once serves its 8 views
        views = d4(standardised(grids[i[s]])).reshape(-1, 8, GRID * GRID)  # (p, 8, G*G)
        uj = standardised(grids[j[s]]).reshape(len(views), -1)
        g = np.einsum("pgd,pd->pg", views, uj).argmax(axis=1)
        at = np.arange(len(views))
        bits[s] = np.bitwise_count(codes[i[s]] ^ codes[j[s], :1]).min(axis=1)
        d = np.abs(views[at, g] - uj).reshape(len(views), nb, RESIDUAL_BLOCK, nb, RESIDUAL_BLOCK)
        residual[s] = d.mean(axis=(2, 4)).max(axis=(1, 2))
    todo = np.arange(len(i)) if register is None else np.flatnonzero(register)
    if len(todo):
        with threadpool_limits(1):  # many small products: BLAS threads cost more than their work here
            aligned, reg = _registered(hashes, grids, i[todo], j[todo], tuple(scales))
        bits[todo], residual[todo] = np.minimum(bits[todo], aligned), np.minimum(residual[todo], reg)
    return bits, residual


def _shard_scores(
    hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray, register: np.ndarray, scales: tuple
) -> tuple:
    """:func:`copy_scores` of pairs whose rows index the given (shard-local) signatures."""
    return copy_scores(hashes, grids, i, j, register=register, scales=scales)


def sharded_copy_scores(
    hashes: np.ndarray,
    grids: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    register: np.ndarray,
    *,
    scales: tuple[float, ...] = CROP_SCALES,
    shard: int = 65536,
    engine: Engine = LOCAL,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`copy_scores` in shards of ``shard`` pairs, one Ray task each on a :class:`~pipeline.engine.RayEngine`: a
    task receives only the hashes and grids of its own pairs' images (~2 kB per image)."""
    if engine is LOCAL or len(i) <= shard:
        return copy_scores(hashes, grids, i, j, register=register, scales=scales)

    def shards():
        for a in range(0, len(i), shard):
            s = slice(a, a + shard)
            rows, local = np.unique(np.concatenate([i[s], j[s]]), return_inverse=True)
            li, lj = np.split(local, 2)
            yield hashes[rows], grids[rows], li, lj, register[s], tuple(scales)

    parts = engine.run_tasks(_shard_scores, shards(), (), num_cpus=TASK_CPUS)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def copy_distances(hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) int64 pHash copy distance of each pair (:func:`copy_scores`)."""
    return copy_scores(hashes, grids, i, j)[0]


def _registered(
    hashes: np.ndarray,
    grids: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    scales: tuple[float, ...] = CROP_SCALES,
    *,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(aligned pHash distance, block residual) of each pair after registration (:func:`copy_scores`).

    Each pair is registered both ways (``i`` as the big view, then ``j``): the 8 symmetries of the
    small grid against every window of the big one at the crop ``scales``
    (:func:`pipeline.dedup.perceptual.windows`, computed once per image, ``chunk`` images and pairs at
    a time: default ~0.7 GB of windows, 256 at the default 81 windows); the best correlation of the
    two sides wins."""
    chunk = chunk or max(1, 256 * window_count() // window_count(scales))
    # best correlation, window and symmetry of the small view, with i (column 0) or j (1) as the big view
    corr = np.full((len(i), 2), -np.inf, dtype=np.float32)
    best = np.zeros((len(i), 2), dtype=np.int64)
    sym = np.zeros((len(i), 2), dtype=np.int64)
    box = None
    for side, (big, small) in enumerate(((i, j), (j, i))):
        # windows once per image (an image is the big view of several pairs), ``chunk`` images at a time
        images, inv = np.unique(big, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        starts = np.searchsorted(inv[order], np.arange(0, len(images) + chunk, chunk))
        for u, (lo, hi) in enumerate(zip(starts[:-1], starts[1:])):
            if lo == hi:
                continue
            w = windows(grids[images[u * chunk : (u + 1) * chunk]], scales)
            box = w.box
            for a in range(lo, hi, chunk):
                s = order[a : min(a + chunk, hi)]
                q = unit_rows(d4(grids[small[s]]).reshape(-1, 8, GRID * GRID))  # (p, 8, G*G)
                c = np.matmul(q, w.unit[inv[s] - u * chunk].transpose(0, 2, 1))  # (p, 8, W)
                best_w = c.argmax(axis=2)  # (p, 8)
                best_c = np.take_along_axis(c, best_w[:, :, None], axis=2)[:, :, 0]
                g = best_c.argmax(axis=1)
                at = np.arange(len(g))
                corr[s, side], best[s, side], sym[s, side] = best_c[at, g], best_w[at, g], g
    side = corr.argmax(axis=1)
    big, small = np.where(side == 0, i, j), np.where(side == 0, j, i)
    at = np.arange(len(i))
    regions = np.stack([window_grid(grids[b], box[w]) for b, w in zip(big, best[at, side])])
    views = d4(grids[small])[at, sym[at, side]]
    return hamming(phash_bits(regions), hashes[small, sym[at, side]]), block_residual(regions, views)


def nearest_score(n: int, i: np.ndarray, j: np.ndarray, score: np.ndarray, empty: float = np.inf) -> np.ndarray:
    """(n,) each image's smallest ``score`` over its candidate pairs (``empty`` if none)."""
    out = np.full(n, empty, dtype=np.float64)
    np.minimum.at(out, i, score)
    np.minimum.at(out, j, score)
    return out
