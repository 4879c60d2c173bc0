"""Near-duplicates (copies): candidate pairs in Hamming and descriptor space, verified by copy distance.

A copy is the same picture re-encoded, resized, slightly cropped, flipped or rotated by 90 degrees,
or shifted in colour or brightness. Each image carries its grey grid and the pHash of its 8
symmetries (:mod:`pipeline.dedup.perceptual`). Candidates (FAISS, so no N x N matrix is formed):

- Hamming: every pair with D4 pHash distance ``<= radius`` (``IndexBinaryFlat.range_search`` of the
  8 symmetry hashes of every image against the stored hashes);
- descriptor: each image's ``neighbours`` nearest images by the correlation of 8 x 8 block means,
  best over the 8 symmetries (``IndexFlatIP``): this is where crops, whose pHash moved, are found.

Each candidate pair gets its copy distance ``min(direct, aligned)`` in pHash bits
(:func:`copy_distances`, as in :mod:`pipeline.dedup.perceptual`); pairs at ``<= threshold`` are copies. The
threshold is calibrated per collection (:mod:`pipeline.dedup.calibration`).
"""

from __future__ import annotations

import numpy as np

from pipeline.dedup.perceptual import HASH_BITS, d4, descriptors, hamming, phash_bits, unit_rows, window_grid, windows


def unique_pairs(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as (min, max), without self-pairs and repeats, sorted."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1).astype(np.int64), axis=0)
    return pairs[:, 0], pairs[:, 1]


def hamming_pairs(hashes: np.ndarray, radius: int, *, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) with ``min_g Hamming(hashes[i, g], hashes[j, 0]) <= radius``.

    Args:
        hashes: (N, 8, B) uint8 packed hashes of the 8 symmetries (identity first).
    """
    import faiss

    n, n_sym, n_bytes = hashes.shape
    index = faiss.IndexBinaryFlat(n_bytes * 8)
    index.add(np.ascontiguousarray(hashes[:, 0]))
    queries = np.ascontiguousarray(hashes.reshape(n * n_sym, n_bytes))
    rows, cols = [], []
    for a in range(0, len(queries), chunk):
        lims, _, found = index.range_search(queries[a : a + chunk], radius + 1)  # faiss keeps distance < radius
        rows.append((a + np.repeat(np.arange(len(lims) - 1), np.diff(lims.astype(np.int64)))) // n_sym)
        cols.append(found)
    return unique_pairs(np.concatenate(rows), np.concatenate(cols).astype(np.int64))


def descriptor_pairs(desc: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of each image with its ``neighbours`` most correlated other images (best symmetry).

    Args:
        desc: (N, 8, D) float32 unit rows of :func:`pipeline.dedup.perceptual.descriptors`.
    """
    import faiss

    n, n_sym, dim = desc.shape
    if n < 2 or neighbours <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(neighbours + 1, n)
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(desc[:, 0]))
    sims, found = index.search(np.ascontiguousarray(desc.reshape(n * n_sym, dim)), k)
    sims, found = sims.reshape(n, n_sym * k), found.reshape(n, n_sym * k)
    sims[found == np.arange(n)[:, None]] = -np.inf  # never oneself
    order = np.argsort(-sims, axis=1, kind="stable")
    found = np.take_along_axis(found, order, axis=1)
    rows, cols = [], []
    for r in range(n):  # first `neighbours` distinct images in order of correlation
        cand = found[r][np.isfinite(np.take_along_axis(sims[r], order[r], axis=0))]
        _, first = np.unique(cand, return_index=True)
        picked = cand[np.sort(first)][:neighbours]
        rows.append(np.full(len(picked), r))
        cols.append(picked)
    return unique_pairs(np.concatenate(rows), np.concatenate(cols).astype(np.int64))


def candidate_pairs(
    hashes: np.ndarray, grids: np.ndarray, radius: int, neighbours: int
) -> tuple[np.ndarray, np.ndarray]:
    """Union of :func:`hamming_pairs` and :func:`descriptor_pairs` (i < j)."""
    hi, hj = hamming_pairs(hashes, radius)
    di, dj = descriptor_pairs(descriptors(grids), neighbours)
    return unique_pairs(np.concatenate([hi, di]), np.concatenate([hj, dj]))


def copy_distances(hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) int64 copy distance ``min(direct, aligned)`` of each pair, in pHash bits.

    direct: D4 pHash distance. aligned: pHash distance after registering the grids, in whichever
    direction (which image is the larger field of view) correlates better; computed only where the
    direct distance is not already 0. Grids are windowed once per image, pairs grouped by image.
    """
    direct = hamming(hashes[i], hashes[j, 0][:, None, :]).min(axis=1)
    todo = np.flatnonzero(direct > 0)
    if not len(todo):
        return direct
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # thousands of tiny products: BLAS threads cost 50x their work here
        aligned = _aligned_distances(hashes, grids, i[todo], j[todo])
    out = direct.copy()
    out[todo] = np.minimum(direct[todo], aligned)
    return out


def _aligned_distances(hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) pHash distance of each pair after registration (see :func:`copy_distances`)."""
    # best correlation, window box and symmetry of the small view, with i (column 0) or j (1) as the big view
    corr = np.full((len(i), 2), -np.inf, dtype=np.float32)
    box = np.zeros((len(i), 2, 3), dtype=np.float64)
    sym = np.zeros((len(i), 2), dtype=np.int64)
    for side, (big, small) in enumerate(((i, j), (j, i))):
        order = np.argsort(big, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(big[order])) + 1):
            w = windows(grids[big[rows[0]]])
            q = unit_rows(d4(grids[small[rows]]).reshape(len(rows) * 8, -1))
            c = (q @ w.unit.T).reshape(len(rows), 8, len(w.unit))
            best_w = c.argmax(axis=2)  # (pairs, 8)
            best_c = np.take_along_axis(c, best_w[:, :, None], axis=2)[:, :, 0]
            g = best_c.argmax(axis=1)
            at = np.arange(len(rows))
            corr[rows, side], box[rows, side], sym[rows, side] = best_c[at, g], w.box[best_w[at, g]], g
    side = corr.argmax(axis=1)
    big, small = np.where(side == 0, i, j), np.where(side == 0, j, i)
    at = np.arange(len(i))
    regions = np.stack([window_grid(grids[b], bx) for b, bx in zip(big, box[at, side])])
    return hamming(phash_bits(regions), hashes[small, sym[at, side]])


def nearest_distance(n: int, i: np.ndarray, j: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(n,) each image's smallest copy distance over its candidate pairs (HASH_BITS + 1 if none)."""
    out = np.full(n, HASH_BITS + 1, dtype=np.int64)
    np.minimum.at(out, i, distance)
    np.minimum.at(out, j, distance)
    return out
