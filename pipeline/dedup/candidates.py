"""Candidate pairs of copies, in time linear in N, in process or as Ray tasks.

Each image carries the pHash of its 8 symmetries and its 8 x 8 block descriptors
(:mod:`pipeline.dedup.perceptual`). Two searches propose pairs; verification
(:func:`pipeline.dedup.copies.copy_scores`) decides.

- Hamming (:func:`hamming_pairs`): multi-index hashing. The 64 bits are cut into ``m = r + 1``
  bands; a pair within Hamming radius ``r`` agrees exactly on at least one band (pigeonhole). Per
  band, the band keys of the 8 symmetry hashes of every image are joined to the sorted keys of the
  stored (identity) hashes; the joined pairs are then checked on all 64 bits. ``r`` shrinks as N
  grows so that a band of ``64 / m`` bits holds about ``bucket_size`` images
  (:func:`band_radius`), and buckets above ``max_bucket`` images (flat images share one hash) are
  skipped and counted. Bands are independent: one task each.
- descriptor (:func:`descriptor_pairs`): each image's ``neighbours`` nearest images by the
  correlation of 8 x 8 block means, best over the 8 symmetries: exact ``IndexFlatIP`` up to
  ``flat_max`` images, above it an IVF index (L2 on the unit rows, 8-bit scalar-quantised rows)
  trained on a sample and searched in shards of queries (one task each). This finds the crops, whose pHash moved.

Where the tasks run is :func:`pipeline.engine.engine_for`'s call (``dedup.copies.engine``):
in this process, or as Ray tasks that receive only the hash codes (one band each) or the
serialised index and one shard of query descriptors. Both give the same pairs.
"""

from __future__ import annotations

import math
import time

import numpy as np

from pipeline.dedup.perceptual import HASH_BITS
from pipeline.engine import LOCAL, Engine, engine_for


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


HNSW_M = 32  # links per node of the HNSW graph over the IVF list centroids (the coarse quantizer)


def ivf_lists(n: int, list_size: int) -> int:
    """IVF lists for ``n`` stored rows: ``n / list_size``, so a query scans ``nprobe list_size`` rows
    whatever N (the lists are found through an HNSW graph, ~log nlist): the kNN grows as N, where a
    flat quantizer's optimum ``sqrt(nprobe n)`` lists grows as N^1.5."""
    return max(1, int(round(n / list_size)))


def quantizer_ef(nprobe: int) -> int:
    """HNSW ``efSearch`` of the coarse quantizer: at least twice the lists probed."""
    return max(32, 2 * nprobe)


TASK_CPUS = 0.5  # CPUs of one Ray task (a hash band, a shard of kNN queries, a shard of pairs to score)


def _band_join(codes: np.ndarray, lo: int, hi: int, radius: int, max_bucket: int | None, chunk: int) -> tuple:
    """Pairs (i, j) within ``radius`` that agree on bits ``lo:hi`` (one band), and the skipped queries."""
    n_sym = codes.shape[1]
    mask = np.uint64((1 << int(hi - lo)) - 1)
    band = (codes >> np.uint64(lo)) & mask  # (N, 8)
    order = np.argsort(band[:, 0], kind="stable")
    stored = band[order, 0]
    query = band.ravel()  # row q = image q // 8, symmetry q % 8
    first, last = np.searchsorted(stored, query, "left"), np.searchsorted(stored, query, "right")
    size = last - first
    skipped = 0
    if max_bucket is not None:
        big = size > max_bucket
        skipped = int(big.sum())
        size = np.where(big, 0, size)
    ends = np.cumsum(size)
    cuts = np.searchsorted(ends, np.arange(chunk, ends[-1] if len(ends) else 0, chunk))
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(query)]):
        s = size[a:b]
        q = np.repeat(np.arange(a, b), s)
        offset = np.arange(len(q)) - np.repeat(np.cumsum(s) - s, s)
        j = order[first[q] + offset]
        i, g = np.divmod(q, n_sym)
        near = np.bitwise_count(codes[i, g] ^ codes[j, 0]) <= radius
        rows.append(i[near])
        cols.append(j[near])
    i, j = unique_pairs(np.concatenate(rows), np.concatenate(cols))
    return i, j, skipped


def hamming_pairs(
    hashes: np.ndarray,
    radius: int,
    *,
    max_bucket: int | None = None,
    chunk: int = 1 << 22,
    stats: dict | None = None,
    engine: Engine = LOCAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) with ``min_g Hamming(hashes[i, g], hashes[j, 0]) <= radius``, by multi-index hashing.

    Args:
        hashes: (N, 8, 8) uint8 packed hashes of the 8 symmetries (identity first).
        max_bucket: band buckets holding more stored images are skipped (None: none skipped); the
            queries that met one are counted in ``stats["skipped_queries"]``, which makes the
            result a subset of the exact one.
        chunk: joined pairs checked at a time (memory ~ 40 bytes each).
        engine: :class:`~pipeline.engine.LocalEngine` (bands one after the other here) or
            :class:`~pipeline.engine.RayEngine` (one task per band).
    """
    codes = codes64(hashes)
    edges = np.linspace(0, HASH_BITS, radius + 2).round().astype(np.int64)
    bands = [(int(lo), int(hi), radius, max_bucket, chunk) for lo, hi in zip(edges[:-1], edges[1:])]
    parts = engine.run_tasks(_band_join, bands, (codes,), num_cpus=TASK_CPUS)
    if stats is not None:
        stats.update(radius=int(radius), bands=int(radius + 1), skipped_queries=sum(p[2] for p in parts))
    return unique_pairs(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


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


def _search_shard(
    index_bytes: np.ndarray, part: np.ndarray, offset: int, k: int, neighbours: int, nprobe: int, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of the images ``offset + arange(len(part))`` (descriptors ``part``, (n, 8, D)) with their
    ``neighbours`` best matches in the serialised index."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    index = faiss.deserialize_index(index_bytes)
    if hasattr(index, "nprobe"):
        index.nprobe = nprobe
    n, n_sym, dim = part.shape
    sims, found = index.search(np.ascontiguousarray(part.reshape(-1, dim)), k)
    if index.metric_type == faiss.METRIC_L2:  # unit rows: |a - b|^2 = 2 - 2 a.b
        sims = 1 - sims / 2
    rows = np.repeat(np.arange(offset, offset + n), n_sym * k)
    return top_distinct(rows, found.ravel().astype(np.int64), sims.ravel(), neighbours)


def descriptor_pairs(
    desc: np.ndarray,
    neighbours: int,
    *,
    flat_max: int,
    nprobe: int,
    list_size: int,
    train_per_list: int,
    train_iters: int,
    seed: int,
    shard: int = 65_536,
    engine: Engine = LOCAL,
    threads: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of each image with its ``neighbours`` most correlated other images (best symmetry).

    Exact (``IndexFlatIP``) up to ``flat_max`` images; above, ``IndexIVFScalarQuantizer`` (L2, 8 bits) with
    ``nlist`` = :func:`ivf_lists` (``list_size`` rows per list) whose centroids are found through an
    HNSW graph (``IndexHNSWFlat``, the coarse quantizer, used for the training's assignments too),
    trained (``train_iters`` k-means iterations) on ``min(N, train_per_list nlist)`` seeded rows,
    ``nprobe`` lists searched: ``O(8 N (nprobe list_size + log nlist))``, linear in N, against
    flat's ``O(8 N^2)``. Queries (the 8 symmetries
    of each image) in shards of ``shard`` images, one task each on a :class:`~pipeline.engine.RayEngine` (``threads``
    FAISS threads per task, 0 = FAISS's default).

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
        nlist = ivf_lists(n, list_size)
        quantizer = faiss.IndexHNSWFlat(dim, HNSW_M)
        quantizer.hnsw.efSearch = quantizer_ef(nprobe)
        # L2 on unit rows ranks as the correlation does; rows stored as 8-bit scalars: scans 1.8x
        # faster than float32 lists at the same planted-copy recall (BENCHMARKS.md, issue 27 scale)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
        train = np.random.default_rng(seed).choice(n, size=min(n, train_per_list * nlist), replace=False)
        index.cp.niter = train_iters
        index.train(base[np.sort(train)])
    index.add(base)
    index_bytes = faiss.serialize_index(index)
    del index
    shards = ((desc[a : a + shard], a, k, neighbours, nprobe, threads) for a in range(0, n, shard))
    parts = engine.run_tasks(_search_shard, shards, (index_bytes,), num_cpus=TASK_CPUS)
    return unique_pairs(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def candidate_pairs(
    hashes: np.ndarray, desc: np.ndarray, cfg: dict, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Union of :func:`hamming_pairs` and :func:`descriptor_pairs` (i < j).

    Args:
        cfg: ``dedup.copies`` settings (``max_radius``, ``bucket_size``, ``max_bucket``,
            ``neighbours``, ``flat_max``, ``nprobe``, ``list_size``, ``train_per_list``, ``train_iters``,
            ``engine``, ``local_max_images``) and ``seed``.
    """
    stats = {} if stats is None else stats
    n = len(hashes)
    engine = engine_for(str(cfg["engine"]), n, int(cfg["local_max_images"]), what="dedup.copies")
    radius = band_radius(n, int(cfg["max_radius"]), int(cfg["bucket_size"]))
    t0 = time.perf_counter()
    hi, hj = hamming_pairs(hashes, radius, max_bucket=int(cfg["max_bucket"]), stats=stats, engine=engine)
    t1 = time.perf_counter()
    di, dj = descriptor_pairs(
        desc,
        int(cfg["neighbours"]),
        flat_max=int(cfg["flat_max"]),
        nprobe=int(cfg["nprobe"]),
        list_size=int(cfg["list_size"]),
        train_per_list=int(cfg["train_per_list"]),
        train_iters=int(cfg["train_iters"]),
        seed=int(cfg["seed"]),
        engine=engine,
        threads=0 if engine is LOCAL else 1,
    )
    stats.update(
        engine=engine.name,
        hamming_pairs=int(len(hi)),
        descriptor_pairs=int(len(di)),
        hash_bands_s=round(t1 - t0, 2),
        descriptor_knn_s=round(time.perf_counter() - t1, 2),
    )
    return unique_pairs(np.concatenate([hi, di]), np.concatenate([hj, dj]))
