"""One shard of the data being clustered, and every k-means operation that touches its rows.

A :class:`Shard` holds rows ``x`` (n, D) float32 with global row indices ``offset .. offset+n-1``.
The driver-side algorithms in :mod:`pipeline.kmeans.algorithm` only ever exchange
centroid-sized arrays (k x D sums, k counts, a few candidate vectors, k thresholds) with shards,
so the same class runs in-process (tests, small levels) or as a Ray actor (one per CPU slot/GPU).

Distances: for ``metric="l2"`` the squared Euclidean distance ``||x - c||^2``; for
``metric="cosine"`` rows and centroids are L2-normalised (spherical k-means) and the reported
distance is ``1 - cos(x, c)``. k-means++ potentials always use ``||x - c||^2``, which on the unit
sphere equals ``2 (1 - cos)``, so both metrics share one code path.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from pipeline.kmeans.config import METRICS

if TYPE_CHECKING:
    import pyarrow as pa

_THREADPOOLS = ThreadpoolController()


@dataclass(frozen=True)
class ShardSource:
    """Where a shard's rows come from: Parquet slices ``(file, start, stop)`` or a ``.npy`` slice.

    ``drop_ids_path``: optional Parquet file with an ``id`` column; those rows are skipped.
    """

    kind: str  # "parquet" | "npy"
    pieces: Sequence[tuple[str, int, int]] = field(default_factory=tuple)
    drop_ids_path: str | None = None


def splitmix64_uniform(index: np.ndarray, seed: int) -> np.ndarray:
    """Counter-based uniform [0, 1) keys: ``u_i = splitmix64(index_i + seed * golden) / 2^64``.

    Depends only on the global row index and the seed, so a random per-cluster sample is the same
    however the rows are sharded.
    """
    mix = np.uint64((int(seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z = index.astype(np.uint64) + mix
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _read_npy_rows(path: str, start: int, stop: int, out: np.ndarray) -> None:
    """Read rows ``start:stop`` of a 2-D C-order float32 ``.npy`` straight into ``out`` (no mmap copy)."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if len(shape) != 2 or fortran or dtype != np.float32:
            raise ValueError(f"{path}: need a 2-D C-order float32 array, got {shape} {dtype} fortran={fortran}")
        fh.seek(fh.tell() + start * shape[1] * 4)
        fh.readinto(memoryview(out).cast("B"))


def _npy_shape(path: str) -> tuple[int, int]:
    return tuple(np.load(path, mmap_mode="r").shape)  # type: ignore[return-value]


def _read_source(source: ShardSource) -> tuple[np.ndarray, pa.ChunkedArray | None]:
    """(x float32 (n, D) filled in place, ids or None for ``.npy``); memory stays ~ the rows."""
    if source.kind == "npy":
        n = sum(b - a for _, a, b in source.pieces)
        d = _npy_shape(source.pieces[0][0])[1] if source.pieces else 0
        x = np.empty((n, d), dtype=np.float32)
        row = 0
        for f, a, b in source.pieces:
            _read_npy_rows(f, a, b, x[row : row + b - a])
            row += b - a
        return x, None
    if source.kind != "parquet":
        raise ValueError(f"unknown shard source kind {source.kind!r}")
    import fsspec
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.io.tables import EMBEDDING, arrow_to_embeddings

    drop = None
    if source.drop_ids_path:
        with fsspec.open(source.drop_ids_path, "rb") as fh:
            drop = pq.read_table(fh, columns=["id"]).column("id").combine_chunks()
    x: np.ndarray | None = None
    ids, row = [], 0
    capacity = sum(b - a for _, a, b in source.pieces)
    for f, start, stop in source.pieces:
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            first = 0
            for rg in range(pf.metadata.num_row_groups):
                n_rg = pf.metadata.row_group(rg).num_rows
                lo, hi = max(start, first), min(stop, first + n_rg)
                if lo < hi:  # one row group at a time, copied into the preallocated matrix
                    t = pf.read_row_group(rg, columns=["id", EMBEDDING]).slice(lo - first, hi - lo)
                    if drop is not None and len(drop):
                        t = t.filter(pc.invert(pc.is_in(t.column("id"), value_set=drop)))
                    emb = arrow_to_embeddings(t.column(EMBEDDING))
                    if x is None:
                        x = np.empty((capacity, emb.shape[1]), dtype=np.float32)
                    x[row : row + len(emb)] = emb
                    row += len(emb)
                    ids.append(t.column("id"))
                first += n_rg
    if x is None:
        return np.zeros((0, 0), dtype=np.float32), None
    if row < capacity:
        x.resize((row, x.shape[1]), refcheck=False)  # in-place shrink after dropped duplicates
    return x, pa.chunked_array([c for col in ids for c in col.chunks], type=pa.string())


class Shard:
    """Rows of the data matrix owned by one worker, with the local half of every k-means step.

    Args:
        x: (n, D) rows, or None to load them from ``source``.
        source: where to read rows when ``x`` is None (done inside the worker).
        metric: ``"l2"`` or ``"cosine"``.
        offset: global index of row 0 (set later with :meth:`set_offset` when loading).
        chunk_mb: memory budget of the temporaries of one chunk of rows.
        threads: FAISS / BLAS threads in this worker.
        use_gpu: put the FAISS centroid index on the GPU when one is present.
    """

    def __init__(
        self,
        x: np.ndarray | None = None,
        *,
        source: ShardSource | None = None,
        metric: str = "l2",
        offset: int = 0,
        chunk_mb: float = 64.0,
        threads: int = 1,
        use_gpu: bool = False,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self._rss_before = _peak_rss_bytes()
        self.threads = max(1, int(threads))
        faiss.omp_set_num_threads(self.threads)
        self.ids = None
        caller_array = x is not None
        if x is None:
            if source is None:
                raise ValueError("Shard needs rows x or a source to read them from")
            x, self.ids = _read_source(source)
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"shard rows must be 2-D (n, D), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or inf")
        if metric == "cosine":
            norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            # Rows read by the shard itself are normalised in place; a caller's array is never modified.
            x = x / norms if caller_array or not x.flags.writeable else np.divide(x, norms, out=x)
        self.x = x
        self.sq = np.einsum("ij,ij->i", x, x)
        self.metric = metric
        self.offset = int(offset)
        self.chunk_bytes = int(chunk_mb * 2**20)
        self.use_gpu = bool(use_gpu) and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        self._gpu_res = faiss.StandardGpuResources() if self.use_gpu else None
        self.set_active(None)
        self.assign = np.full(len(x), -1, dtype=np.int64)
        self.dist = np.zeros(len(x), dtype=np.float32)

    # ---- bookkeeping ---------------------------------------------------------------------------
    def size(self) -> int:
        return len(self.x)

    def dim(self) -> int:
        return int(self.x.shape[1])

    def set_offset(self, offset: int) -> None:
        self.offset = int(offset)

    def write_ids(self, path: str) -> int:
        """Write ``(index, id)`` of this shard's rows to Parquet at ``path``; returns the row count."""
        import pyarrow as pa

        from pipeline.io.tables import write_parquet_atomic

        if self.ids is None:
            raise ValueError("this shard has no ids (rows were not read from Parquet)")
        table = pa.table({"index": np.arange(self.offset, self.offset + len(self.x)), "id": self.ids})
        write_parquet_atomic(table, path)
        return len(self.x)

    def peak_rss(self) -> tuple[int, int]:
        """(peak RSS bytes of this process before the rows were loaded, peak RSS now)."""
        return self._rss_before, _peak_rss_bytes()

    def _rows(self, width: int) -> int:
        """Rows per chunk so that a chunk's (rows, D + width) float64 temporaries fit the budget."""
        return max(256, self.chunk_bytes // (8 * (self.x.shape[1] + width + 4)))

    # ---- active subset (all rows, or a resampling sample) ----------------------------------------
    def set_active(self, local_index: np.ndarray | None) -> int:
        """Restrict k-means fitting to ``local_index`` rows (None: all rows); returns the count."""
        if local_index is None:
            self.active, self.xa, self.sqa = None, self.x, self.sq
        else:
            self.active = np.asarray(local_index, dtype=np.int64)
            self.xa, self.sqa = self.x[self.active], self.sq[self.active]
        self._min_d2 = self._trial_d2 = None
        self._fit_assign = self._fit_dist = None
        return len(self.xa)

    def n_active(self) -> int:
        return len(self.xa)

    def _active_global(self) -> np.ndarray:
        local = np.arange(len(self.x)) if self.active is None else self.active
        return local + self.offset

    def active_rows(self, positions: np.ndarray) -> np.ndarray:
        """Vectors of the active rows at ``positions`` (0-based among active rows)."""
        return self.xa[np.asarray(positions, dtype=np.int64)]

    # ---- distances --------------------------------------------------------------------------------
    def _index(self, centroids: np.ndarray) -> faiss.Index:
        d = centroids.shape[1]
        index = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if self.use_gpu:
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        index.add(np.ascontiguousarray(centroids, dtype=np.float32))
        return index

    def _search(self, xs: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of every row of ``xs``: (assignments int64, distances float32)."""
        index = self._index(centroids)
        assign = np.empty(len(xs), dtype=np.int64)
        dist = np.empty(len(xs), dtype=np.float32)
        step = self._rows(len(centroids))
        for a in range(0, len(xs), step):
            dd, ii = index.search(xs[a : a + step], 1)
            assign[a : a + step] = ii[:, 0]
            dist[a : a + step] = 1.0 - dd[:, 0] if self.metric == "cosine" else np.maximum(dd[:, 0], 0.0)
        return assign, dist

    def _sq_dist(self, candidates: np.ndarray) -> np.ndarray:
        """``||x_i - c_j||^2 = ||x_i||^2 - 2 x_i . c_j + ||c_j||^2`` for active rows, (m, n_active)."""
        c = np.ascontiguousarray(candidates, dtype=np.float32)
        out = np.empty((len(c), len(self.xa)), dtype=np.float32)
        csq = np.einsum("ij,ij->i", c, c)
        step = self._rows(len(c))
        # BLAS threads capped like FAISS's: oversubscribed OpenBLAS threads spin (10x slower seen)
        with _THREADPOOLS.limit(limits=self.threads, user_api="blas"):
            for a in range(0, len(self.xa), step):
                block = self.sqa[a : a + step][None, :] - 2.0 * (c @ self.xa[a : a + step].T) + csq[:, None]
                out[:, a : a + step] = np.maximum(block, 0.0)
        return out

    # ---- k-means++ (min-distances stay here; only scalars and candidate vectors leave) -----------
    def pp_reset(self, first_centre: np.ndarray) -> float:
        """Start k-means++: ``D(x) = ||x - c_1||^2``; returns the local potential ``sum_x D(x)``."""
        self._min_d2 = self._sq_dist(first_centre[None, :])[0]
        return float(self._min_d2.sum(dtype=np.float64))

    def pp_pick(self, thresholds: np.ndarray) -> np.ndarray:
        """Candidates for local potential thresholds r: the first row with ``cumsum(D) > r``."""
        cum = np.cumsum(self._min_d2, dtype=np.float64)
        pos = np.minimum(np.searchsorted(cum, thresholds, side="right"), len(cum) - 1)
        return self.xa[pos]

    def pp_trial(self, candidates: np.ndarray) -> np.ndarray:
        """Potential after adding each candidate: ``phi_j = sum_x min(D(x), ||x - c_j||^2)``."""
        self._trial_d2 = np.minimum(self._sq_dist(candidates), self._min_d2[None, :])
        return self._trial_d2.sum(axis=1, dtype=np.float64)

    def pp_commit(self, j: int) -> float:
        """Keep trial candidate ``j`` as the next centre; returns the new local potential."""
        self._min_d2 = self._trial_d2[j]
        self._trial_d2 = None
        return float(self._min_d2.sum(dtype=np.float64))

    # ---- Lloyd ---------------------------------------------------------------------------------------
    def lloyd_stats(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Assign active rows; return per-cluster sums (k, D) float64, counts (k,), inertia.

        Sums use a sparse one-hot product ``S = onehot(assign)^T X``, chunked (same result as
        ``np.add.at`` but ~5x faster; the float64 accumulation keeps shard order irrelevant).
        """
        k = len(centroids)
        assign, dist = self._search(self.xa, centroids)
        self._fit_assign, self._fit_dist = assign, dist
        sums = np.zeros((k, self.xa.shape[1]), dtype=np.float64)
        step = self._rows(1)
        for a in range(0, len(self.xa), step):
            ai = assign[a : a + step]
            onehot = sp.csr_matrix((np.ones(len(ai)), (ai, np.arange(len(ai)))), shape=(k, len(ai)))
            sums += onehot @ self.xa[a : a + step].astype(np.float64)
        counts = np.bincount(assign, minlength=k).astype(np.int64)
        return sums, counts, float(dist.sum(dtype=np.float64))

    def farthest(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``m`` active rows farthest from their centroid in the last :meth:`lloyd_stats`.

        Returns (distances desc, global indices, vectors); ties broken by the smaller index.
        """
        gidx = self._active_global()
        order = np.lexsort((gidx, -self._fit_dist.astype(np.float64)))[:m]
        return self._fit_dist[order], gidx[order], self.xa[order]

    # ---- assignment of all rows, resampling sample ------------------------------------------------
    def assign_all(self, centroids: np.ndarray) -> tuple[np.ndarray, float]:
        """Assign every row (not only active ones); returns (counts (k,), inertia)."""
        self.assign, self.dist = self._search(self.x, centroids)
        return np.bincount(self.assign, minlength=len(centroids)).astype(np.int64), float(
            self.dist.sum(dtype=np.float64)
        )

    def assignments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global indices, assignments, distances) of every row; called once per finished step."""
        return np.arange(self.offset, self.offset + len(self.x)), self.assign, self.dist

    def _sample_keys(self, strategy: str, seed: int) -> np.ndarray:
        if strategy == "closest":
            return self.dist.astype(np.float64)
        if strategy == "random":
            return splitmix64_uniform(np.arange(self.offset, self.offset + len(self.x)), seed)
        raise ValueError(f"resampling_strategy must be 'closest' or 'random', got {strategy!r}")

    def sample_candidates(
        self, per_cluster: int, strategy: str, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local top-``per_cluster`` rows of every cluster by (key, global index).

        Key: distance to the centroid (``closest``) or a counter-based uniform draw (``random``,
        i.e. uniform sampling without replacement). Returns (cluster, key, global index) arrays.
        """
        keys = self._sample_keys(strategy, seed)
        gidx = np.arange(self.offset, self.offset + len(self.x))
        order = np.lexsort((gidx, keys, self.assign))
        a_sorted = self.assign[order]
        starts = np.searchsorted(a_sorted, a_sorted, side="left")
        keep = order[np.arange(len(order)) - starts < per_cluster]
        return self.assign[keep], keys[keep], gidx[keep]

    def select_sample(self, thr_key: np.ndarray, thr_index: np.ndarray, strategy: str, seed: int) -> int:
        """Activate rows with ``(key, index) <= (thr_key[c], thr_index[c])`` of their cluster c."""
        keys = self._sample_keys(strategy, seed)
        gidx = np.arange(self.offset, self.offset + len(self.x))
        tk, ti = thr_key[self.assign], thr_index[self.assign]
        mask = (keys < tk) | ((keys == tk) & (gidx <= ti))
        return self.set_active(np.flatnonzero(mask))

    def members(self, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(assignments, vectors) of the rows currently assigned to any of ``clusters`` (split mode)."""
        mask = np.isin(self.assign, clusters)
        return self.assign[mask], self.x[mask]


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
