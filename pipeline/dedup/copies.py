"""Near-duplicates (copies): candidate pairs by hash bands and an inverted-file index, verified by
the residual of the registered grey grids.

A copy is the same picture re-encoded, resized, slightly cropped, flipped or rotated by 90 degrees,
or shifted in colour or brightness. Each image carries its grey grid and the pHash of its 8
symmetries (:mod:`pipeline.dedup.perceptual`). Candidates, in time linear in N:

- Hamming (:func:`hamming_pairs`): multi-index hashing. The 64 bits are cut into ``m = r + 1``
  bands; a pair within Hamming radius ``r`` agrees exactly on at least one band (pigeonhole). Per
  band, the band keys of the 8 symmetry hashes of every image are joined to the sorted keys of the
  stored (identity) hashes; the joined pairs are then checked on all 64 bits. ``r`` shrinks as N
  grows so that a band of ``64 / m`` bits holds about ``bucket_size`` images
  (:func:`band_radius`), and buckets above ``max_bucket`` images (flat images share one hash) are
  skipped and counted;
- descriptor (:func:`descriptor_pairs`): each image's ``neighbours`` nearest images by the
  correlation of 8 x 8 block means, best over the 8 symmetries: exact ``IndexFlatIP`` up to
  ``flat_max`` images, above it ``IndexIVFFlat`` with ``nlist ~ sqrt(N)`` lists trained on a sample,
  searched in shards. This finds the crops, whose pHash moved.

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

import math

import numpy as np

from pipeline.dedup.perceptual import (
    CROP_SCALES,
    GRID,
    HASH_BITS,
    d4,
    hamming,
    phash_bits,
    unit_rows,
    window_grid,
    windows,
)

RESIDUAL_BLOCK = 4  # pixels of the 32-grid per side of a residual block


def unique_pairs(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs as (min, max), without self-pairs and repeats, sorted."""
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    pairs = np.unique(np.stack([a[keep], b[keep]], axis=1).astype(np.int64), axis=0)
    return pairs[:, 0], pairs[:, 1]


def codes64(hashes: np.ndarray) -> np.ndarray:
    """(N, 8) uint64 of (N, 8, 8) packed 64-bit hashes."""
    return np.ascontiguousarray(hashes).view(">u8")[..., 0].astype(np.uint64)


def band_radius(n: int, max_radius: int, bucket_size: int) -> int:
    """Largest radius ``r <= max_radius`` whose ``r + 1`` bands keep ``n / 2^(64 / (r + 1)) <= bucket_size``
    images per bucket (expected, uniform bits): the join then costs ``O(8 N (r + 1) bucket_size)``."""
    need = max(math.log2(max(n, 1) / max(bucket_size, 1)), 1.0)  # bits per band
    return int(max(0, min(max_radius, math.floor(HASH_BITS / need) - 1)))


def hamming_pairs(
    hashes: np.ndarray,
    radius: int,
    *,
    max_bucket: int | None = None,
    chunk: int = 1 << 22,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) with ``min_g Hamming(hashes[i, g], hashes[j, 0]) <= radius``, by multi-index hashing.

    Args:
        hashes: (N, 8, 8) uint8 packed hashes of the 8 symmetries (identity first).
        max_bucket: band buckets holding more stored images are skipped (None: none skipped); the
            queries that met one are counted in ``stats["skipped_queries"]``, which makes the
            result a subset of the exact one.
        chunk: joined pairs checked at a time (memory ~ 40 bytes each).
    """
    codes = codes64(hashes)
    n, n_sym = codes.shape
    edges = np.linspace(0, HASH_BITS, radius + 2).round().astype(np.int64)
    rows, cols, skipped = [], [], 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = np.uint64((1 << int(hi - lo)) - 1)
        band = (codes >> np.uint64(lo)) & mask  # (N, 8)
        order = np.argsort(band[:, 0], kind="stable")
        stored = band[order, 0]
        query = band.ravel()  # row q = image q // 8, symmetry q % 8
        first, last = np.searchsorted(stored, query, "left"), np.searchsorted(stored, query, "right")
        size = last - first
        if max_bucket is not None:
            big = size > max_bucket
            skipped += int(big.sum())
            size = np.where(big, 0, size)
        ends = np.cumsum(size)
        cuts = np.searchsorted(ends, np.arange(chunk, ends[-1] if len(ends) else 0, chunk))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(query)]):
            s = size[a:b]
            q = np.repeat(np.arange(a, b), s)
            offset = np.arange(len(q)) - np.repeat(np.cumsum(s) - s, s)
            j = order[first[q] + offset]
            i, g = np.divmod(q, n_sym)
            near = np.bitwise_count(codes[i, g] ^ codes[j, 0]) <= radius
            rows.append(i[near])
            cols.append(j[near])
    if stats is not None:
        stats.update(radius=int(radius), bands=int(radius + 1), skipped_queries=skipped)
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return unique_pairs(np.concatenate(rows), np.concatenate(cols))


def top_distinct(rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Of (row, col, sim) triples, each row's ``k`` most similar distinct cols other than itself."""
    keep = (rows != cols) & (cols >= 0) & np.isfinite(sims)
    rows, cols, sims = rows[keep], cols[keep], sims[keep]
    best = np.lexsort((-sims, cols, rows))  # per (row, col): highest sim first
    rows, cols, sims = rows[best], cols[best], sims[best]
    first = np.r_[True, (np.diff(rows) != 0) | (np.diff(cols) != 0)]
    rows, cols, sims = rows[first], cols[first], sims[first]
    order = np.lexsort((cols, -sims, rows))
    rows, cols = rows[order], cols[order]
    start = np.searchsorted(rows, rows, "left")
    rank = np.arange(len(rows)) - start
    return rows[rank < k], cols[rank < k]


def descriptor_pairs(
    desc: np.ndarray,
    neighbours: int,
    *,
    flat_max: int = 50_000,
    nprobe: int = 16,
    shard: int = 65_536,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of each image with its ``neighbours`` most correlated other images (best symmetry).

    Exact (``IndexFlatIP``) up to ``flat_max`` images; above, ``IndexIVFFlat`` with
    ``nlist = round(sqrt(N))`` trained on ``min(N, 64 nlist)`` seeded rows, ``nprobe`` lists searched,
    queries in shards of ``shard`` images: ``O(N (sqrt(N) + nprobe N / nlist))``, i.e. ``O(N^1.5)``
    against flat's ``O(N^2)``.

    Args:
        desc: (N, 8, D) float32 unit rows of :func:`pipeline.dedup.perceptual.descriptors`.
    """
    import faiss

    n, n_sym, dim = desc.shape
    if n < 2 or neighbours <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(neighbours + 1, n)
    base = np.ascontiguousarray(desc[:, 0])
    if n <= flat_max:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(round(math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        train = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(base[np.sort(train)])
        index.nprobe = nprobe
    index.add(base)
    rows, cols = [], []
    for a in range(0, n, shard):
        part = desc[a : a + shard]
        sims, found = index.search(np.ascontiguousarray(part.reshape(-1, dim)), k)
        r, c = top_distinct(
            np.repeat(np.arange(a, a + len(part)), n_sym * k), found.ravel().astype(np.int64), sims.ravel(), neighbours
        )
        rows.append(r)
        cols.append(c)
    return unique_pairs(np.concatenate(rows), np.concatenate(cols))


def candidate_pairs(
    hashes: np.ndarray, desc: np.ndarray, cfg: dict, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Union of :func:`hamming_pairs` and :func:`descriptor_pairs` (i < j).

    Args:
        cfg: ``dedup.copies`` settings (``max_radius``, ``bucket_size``, ``max_bucket``,
            ``neighbours``, ``flat_max``, ``nprobe``) and ``seed``.
    """
    stats = {} if stats is None else stats
    radius = band_radius(len(hashes), int(cfg["max_radius"]), int(cfg["bucket_size"]))
    hi, hj = hamming_pairs(hashes, radius, max_bucket=int(cfg["max_bucket"]), stats=stats)
    di, dj = descriptor_pairs(
        desc, int(cfg["neighbours"]), flat_max=int(cfg["flat_max"]), nprobe=int(cfg["nprobe"]), seed=int(cfg["seed"])
    )
    stats.update(hamming_pairs=int(len(hi)), descriptor_pairs=int(len(di)))
    return unique_pairs(np.concatenate([hi, di]), np.concatenate([hj, dj]))


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
    chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """(bits (P,) int64 pHash copy distance, residual (P,) float32) of each pair.

    Direct scores (every pair, vectorised): the symmetry of ``i`` that correlates best with ``j``,
    its pHash distance and block residual. Registered scores (pairs where ``register`` is True,
    default all; grids windowed once per image, pairs grouped by image): the same after
    registration over the crop ``scales`` (:func:`pipeline.dedup.perceptual.windows`). Each score is
    the smaller of the two.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    bits = np.zeros(len(i), np.int64)
    residual = np.zeros(len(i), np.float32)
    for a in range(0, len(i), chunk):
        s = slice(a, a + chunk)
        views = d4(grids[i[s]])  # (p, 8, G, G)
        u = standardised(views.reshape(-1, GRID, GRID)).reshape(len(views), 8, -1)
        g = np.einsum("pgd,pd->pg", u, standardised(grids[j[s]]).reshape(len(views), -1)).argmax(axis=1)
        at = np.arange(len(views))
        bits[s] = hamming(hashes[i[s]], hashes[j[s], 0][:, None, :]).min(axis=1)
        residual[s] = block_residual(views[at, g], grids[j[s]])
    todo = np.arange(len(i)) if register is None else np.flatnonzero(register)
    if len(todo):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # thousands of tiny products: BLAS threads cost 50x their work here
            aligned, reg = _registered(hashes, grids, i[todo], j[todo], tuple(scales))
        bits[todo], residual[todo] = np.minimum(bits[todo], aligned), np.minimum(residual[todo], reg)
    return bits, residual


def copy_distances(hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P,) int64 pHash copy distance of each pair (:func:`copy_scores`)."""
    return copy_scores(hashes, grids, i, j)[0]


def _registered(
    hashes: np.ndarray, grids: np.ndarray, i: np.ndarray, j: np.ndarray, scales: tuple[float, ...] = CROP_SCALES
) -> tuple[np.ndarray, np.ndarray]:
    """(aligned pHash distance, block residual) of each pair after registration (:func:`copy_scores`)."""
    # best correlation, window box and symmetry of the small view, with i (column 0) or j (1) as the big view
    corr = np.full((len(i), 2), -np.inf, dtype=np.float32)
    box = np.zeros((len(i), 2, 4), dtype=np.float64)
    sym = np.zeros((len(i), 2), dtype=np.int64)
    for side, (big, small) in enumerate(((i, j), (j, i))):
        order = np.argsort(big, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(big[order])) + 1):
            w = windows(grids[big[rows[0]]], scales)
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
    views = d4(grids[small])[at, sym[at, side]]
    return hamming(phash_bits(regions), hashes[small, sym[at, side]]), block_residual(regions, views)


def nearest_score(n: int, i: np.ndarray, j: np.ndarray, score: np.ndarray, empty: float = np.inf) -> np.ndarray:
    """(n,) each image's smallest ``score`` over its candidate pairs (``empty`` if none)."""
    out = np.full(n, empty, dtype=np.float64)
    np.minimum.at(out, i, score)
    np.minimum.at(out, j, score)
    return out
