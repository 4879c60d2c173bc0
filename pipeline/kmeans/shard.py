"""One shard of the data being clustered, and every k-means operation that touches its rows.

A :class:`Shard` holds rows (n, D) float32 with global row indices ``offset .. offset+n-1``, in
memory (:class:`MemoryRows`) or, out of core, spilled once to a local ``.npy`` and streamed in
chunks through one reusable buffer (:class:`SpilledRows`; both in :mod:`pipeline.kmeans.rows`).
Every operation walks the rows chunk by chunk, so both give the same result. The driver-side algorithms in
:mod:`pipeline.kmeans.algorithm` only ever exchange centroid-sized arrays (k x D sums, k counts,
a few candidate vectors, k thresholds) with shards, so the same class runs in-process (tests,
small levels) or as a Ray actor (one per CPU slot/GPU). A finished step is written by every
shard as its own part (:meth:`Shard.write_step_part`); no N-length array leaves a shard.

Distances: for ``metric="l2"`` the squared Euclidean distance ``||x - c||^2``; for
``metric="cosine"`` rows and centroids are L2-normalised (spherical k-means) and the reported
distance is ``1 - cos(x, c)``. k-means++ potentials always use ``||x - c||^2``, which on the unit
sphere equals ``2 (1 - cos)``, so both metrics share one code path.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from pipeline.atomic import atomic_path
from pipeline.kmeans.config import METRICS, CentroidIndex, conf_default
from pipeline.kmeans.rows import (  # noqa: F401 - ShardSource, MemoryRows, npy_header, write_npy_blocks re-exported
    MemoryRows,
    ShardSource,
    SpilledRows,
    SpillWriter,
    blocks_of,
    iter_source,
    npy_header,
    prepare_rows,
    source_rows,
    write_npy_blocks,
)

if TYPE_CHECKING:
    import pyarrow as pa

_THREADPOOLS = ThreadpoolController()


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


# Bytes per row of the state an out-of-core shard keeps in memory besides its row blocks: squared
# norm, assignment (int32), distance, k-means++ D(x), the fit distance, and the sort / sample-key
# temporaries of one finished step (int64 order, float64 keys, int64 global index).
ROW_STATE_BYTES = 64


def resolve_out_of_core(out_of_core: bool | str, n_rows: int, dim: int, memory_budget_mb: float | None) -> bool:
    """``kmeans.out_of_core``: true / false, or ``auto``: rows + per-row state exceed the budget."""
    if out_of_core in (True, False):
        return bool(out_of_core)
    if out_of_core != "auto":
        raise ValueError(f"kmeans.out_of_core must be true, false or 'auto', got {out_of_core!r}")
    return memory_budget_mb is not None and n_rows * (dim * 4 + ROW_STATE_BYTES) > memory_budget_mb * 2**20


class Shard:
    """Rows of the data matrix owned by one worker, with the local half of every k-means step.

    Args:
        x: (n, D) rows, or None to load them from ``source``.
        source: where to read rows when ``x`` is None (done inside the worker).
        metric: ``"l2"`` or ``"cosine"``.
        offset: global index of row 0 (set later with :meth:`set_offset` when loading).
        chunk_mb: memory budget of the temporaries of one chunk of rows (None: ``kmeans.chunk_mb`` of conf).
        threads: FAISS / BLAS threads in this worker.
        use_gpu: put the FAISS centroid index on the GPU when one is present (None: ``kmeans.use_gpu`` of conf).
        out_of_core: (resolved: :func:`resolve_out_of_core`) spill the (normalised) rows once to a local ``.npy`` and stream them in chunks.
        memory_budget_mb: out-of-core: bytes for chunks + per-row state (``ROW_STATE_BYTES`` a row);
            the chunk size is ``min(chunk_mb, (budget - n * ROW_STATE_BYTES) / 3)``.
        spill_dir: local folder for the spilled rows (default: the system's temporary folder).
        centroid_index: how the nearest centroid is found (exact flat search, or an HNSW graph over
            the centroids for large k); default exact.

    Every operation walks the rows in the same chunks in memory and out of core, so both give the
    same result for the same chunk size.
    """

    def __init__(
        self,
        x: np.ndarray | None = None,
        *,
        source: ShardSource | None = None,
        metric: str,
        offset: int = 0,
        chunk_mb: float | None = None,
        threads: int = 1,
        use_gpu: bool | None = None,
        out_of_core: bool,
        memory_budget_mb: float | None = None,
        spill_dir: str | None = None,
        centroid_index: CentroidIndex | None = None,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if x is None and source is None:
            raise ValueError("Shard needs rows x or a source to read them from")
        self._rss_before = _peak_rss_bytes()
        self._spill: str | None = None
        self.threads = max(1, int(threads))
        faiss.omp_set_num_threads(self.threads)
        self.metric = metric
        self.centroid_index = centroid_index or CentroidIndex()
        self.offset = int(offset)
        self.chunk_bytes = int((conf_default("chunk_mb") if chunk_mb is None else chunk_mb) * 2**20)
        self.budget = None if memory_budget_mb is None else int(memory_budget_mb * 2**20)
        self.ids: pa.ChunkedArray | None = None
        self._ids_path: str | None = None
        if x is not None:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.ndim != 2:
                raise ValueError(f"shard rows must be 2-D (n, D), got shape {x.shape}")
        if out_of_core:
            self.rows, self.sq = self._spill_rows(x, source, spill_dir)
        else:
            self.rows, self.sq = self._load_rows(x, source)
        use_gpu = conf_default("use_gpu") if use_gpu is None else use_gpu
        self.use_gpu = bool(use_gpu) and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        self._gpu_res = faiss.StandardGpuResources() if self.use_gpu else None
        self._graph: tuple[faiss.Index | None, int] = (None, 0)  # last HNSW graph over centroids, its age
        self._fit_assign: np.ndarray | None = None
        self._moved_hint: np.ndarray | None = None  # the last fit's assignment, kept across set_active
        self.set_active(None)
        self.assign = np.full(len(self.rows), -1, dtype=np.int32)
        self.dist = np.zeros(len(self.rows), dtype=np.float32)

    def _load_rows(self, x: np.ndarray | None, source: ShardSource | None) -> tuple[MemoryRows, np.ndarray]:
        """In memory: a caller's array is never modified; rows read here are normalised in place."""
        if x is not None:
            x, sq = prepare_rows(x, self.metric, in_place=False)
            return MemoryRows(x), sq
        capacity, row, ids = source_rows(source), 0, []
        x = None
        for block, block_ids in iter_source(source):
            if x is None:
                x = np.empty((capacity, block.shape[1]), dtype=np.float32)
            x[row : row + len(block)] = block
            row += len(block)
            if block_ids is not None:
                ids.append(block_ids)
        if x is None:
            x = np.zeros((0, 0), dtype=np.float32)
        elif row < capacity:
            x.resize((row, x.shape[1]), refcheck=False)  # in-place shrink after dropped duplicates
        if source.kind == "parquet":
            import pyarrow as pa

            self.ids = pa.chunked_array(ids, type=pa.string())
        x, sq = prepare_rows(x, self.metric, in_place=True)
        return MemoryRows(x), sq

    def _spill_rows(
        self, x: np.ndarray | None, source: ShardSource | None, spill_dir: str | None
    ) -> tuple[SpilledRows, np.ndarray]:
        """Out of core: normalise and write the rows block by block to ``<spill>/rows.npy`` once."""
        self._spill = tempfile.mkdtemp(prefix="strata-kmeans-", dir=spill_dir)
        capacity = len(x) if x is not None else source_rows(source)
        if self.budget is not None:
            free = self.budget - capacity * ROW_STATE_BYTES
            if free <= 0:
                raise ValueError(
                    f"kmeans.memory_budget_mb={self.budget / 2**20:g} cannot hold the per-row state of {capacity} rows "
                    f"(~{capacity * ROW_STATE_BYTES / 2**20:.1f} MB): raise it or use more actors"
                )
            self.chunk_bytes = min(self.chunk_bytes, free // 3)
        writer = SpillWriter(os.path.join(self._spill, "rows.npy"), capacity)
        sq = np.empty(capacity, dtype=np.float32)
        ids_writer = None
        if x is not None:
            blocks: Iterable = ((x[a:b].copy(), None) for a, b in blocks_of(len(x), 65536))
        else:
            blocks = iter_source(source)
        for block, block_ids in blocks:
            block, block_sq = prepare_rows(block, self.metric, in_place=True)
            sq[writer.n : writer.n + len(block)] = block_sq
            writer.append(block)
            if block_ids is not None:
                import pyarrow as pa
                import pyarrow.parquet as pq

                if ids_writer is None:
                    self._ids_path = os.path.join(self._spill, "ids.parquet")
                    ids_writer = pq.ParquetWriter(self._ids_path, pa.schema([("id", pa.string())]))
                ids_writer.write_table(pa.table({"id": block_ids.cast(pa.string())}))
        if ids_writer is not None:
            ids_writer.close()
        n, dim = writer.finish()
        self._dim = dim
        buffer = np.empty((self._rows(1), dim), dtype=np.float32)
        return SpilledRows(writer.path, n, dim, buffer), sq[:n].copy() if n < capacity else sq

    @property
    def out_of_core(self) -> bool:
        return isinstance(self.rows, SpilledRows)

    def spilled(self) -> bool:
        """Whether this shard streams its rows from a spill file (callable on an actor)."""
        return self.out_of_core

    def close(self) -> None:
        """Delete the spilled rows (out of core); the shard is unusable afterwards."""
        if getattr(self, "_spill", None):
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    def __del__(self) -> None:
        self.close()

    # ---- bookkeeping ---------------------------------------------------------------------------
    def size(self) -> int:
        return len(self.rows)

    def dim(self) -> int:
        return self.rows.dim

    def set_offset(self, offset: int) -> None:
        self.offset = int(offset)

    def write_ids(self, path: str) -> int:
        """Write ``(index, id)`` of this shard's rows to Parquet at ``path``; returns the row count.

        Out of core the ids were spilled with the rows and are copied batch by batch.
        """
        import fsspec
        import pyarrow as pa
        import pyarrow.parquet as pq

        from pipeline.io.tables import write_parquet_atomic

        if self.ids is not None:
            table = pa.table({"index": np.arange(self.offset, self.offset + len(self.rows)), "id": self.ids})
            write_parquet_atomic(table, path)
            return len(self.rows)
        if self._ids_path is None:
            raise ValueError("this shard has no ids (rows were not read from Parquet)")
        fs, p = fsspec.core.url_to_fs(path)
        row, schema = self.offset, pa.schema([("index", pa.int64()), ("id", pa.string())])
        with atomic_path(p, fs) as tmp, fs.open(tmp, "wb") as fh, pq.ParquetWriter(fh, schema) as writer:
            for batch in pq.ParquetFile(self._ids_path).iter_batches(batch_size=65536):
                index = pa.array(np.arange(row, row + batch.num_rows), pa.int64())
                writer.write_table(pa.table({"index": index, "id": batch.column(0)}, schema=schema))
                row += batch.num_rows
        return len(self.rows)

    def peak_rss(self) -> tuple[int, int]:
        """(peak RSS bytes of this process before the rows were loaded, peak RSS now)."""
        return self._rss_before, _peak_rss_bytes()

    def _rows(self, width: int) -> int:
        """Rows per chunk so that a chunk's (rows, D + width) float64 temporaries fit the budget."""
        dim = self.rows.dim if hasattr(self, "rows") else self._dim
        return max(256, self.chunk_bytes // (8 * (dim + width + 4)))

    # ---- active subset (all rows, or a resampling sample) ----------------------------------------
    def set_active(self, local_index: np.ndarray | None) -> int:
        """Restrict k-means fitting to ``local_index`` rows (None: all rows); returns the count.

        Out of core the sample is gathered in memory when it fits the budget, else spilled to
        ``<spill>/active.npy`` in one pass.
        """
        self._moved_hint = self._fit_hint()
        if local_index is None:
            self.active, self.xa, self.sqa = None, self.rows, self.sq
        else:
            self.active = np.asarray(local_index, dtype=np.int64)
            self.sqa = self.sq[self.active]
            self.xa = MemoryRows(self.rows.take(self.active)) if self._sample_fits() else self._spill_active()
        self._min_d2 = self._trial_d2 = self._candidates = None
        self._fit_dist = self._fit_assign = None
        return len(self.xa)

    def _sample_fits(self) -> bool:
        if not self.out_of_core or self.budget is None:
            return True
        free = self.budget - len(self.rows) * ROW_STATE_BYTES - 3 * self.chunk_bytes
        return len(self.active) * self.rows.dim * 4 <= free

    def _spill_active(self) -> SpilledRows:
        if np.any(np.diff(self.active) <= 0):
            raise ValueError("an active subset spilled to disk must be strictly increasing row indices")
        writer = SpillWriter(os.path.join(self._spill, "active.npy"), len(self.active))
        for a, block in self.rows.blocks(self._rows(1)):
            lo, hi = np.searchsorted(self.active, [a, a + len(block)])
            writer.append(block[self.active[lo:hi] - a])
        n, dim = writer.finish()
        return SpilledRows(writer.path, n, dim, self.rows.buffer)

    def n_active(self) -> int:
        return len(self.xa)

    def _fit_hint(self) -> np.ndarray | None:
        """The last Lloyd assignment as a per-row hint over all rows (-1: row not in the fit), or None."""
        if self._fit_assign is None:
            return None
        if self.active is None:
            return self._fit_assign
        hint = np.full(len(self.rows), -1, dtype=self._fit_assign.dtype)
        hint[self.active] = self._fit_assign
        return hint

    def _active_global(self) -> np.ndarray:
        local = np.arange(len(self.rows)) if self.active is None else self.active
        return local + self.offset

    def active_rows(self, positions: np.ndarray) -> np.ndarray:
        """Vectors of the active rows at ``positions`` (0-based among active rows)."""
        return self.xa.take(np.asarray(positions, dtype=np.int64))

    # ---- distances --------------------------------------------------------------------------------
    def _index(self, centroids: np.ndarray, exact: bool = False, moved: bool = False) -> faiss.Index:
        """Flat index over ``centroids`` or, for large k on CPU (:class:`CentroidIndex`), an HNSW graph.

        HNSW insertion runs on one thread: FAISS's parallel insertion makes the graph (and hence the
        assignment) depend on thread timing; one thread keeps same seed, same result. ``moved``:
        ``centroids`` are the last graph's, moved by one Lloyd update; the graph is then reused with
        the new vectors (same links) unless it is ``rebuild_every`` iterations old.
        """
        k, d = centroids.shape
        faiss_metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        ci = self.centroid_index
        graph, age = self._graph
        if not exact and moved and graph is not None and graph.ntotal == k and age + 1 < ci.rebuild_every:
            faiss.copy_array_to_vector(c.view(np.uint8).ravel(), faiss.downcast_index(graph.storage).codes)
            self._graph = (graph, age + 1)
            return graph
        if not exact and ci.uses_hnsw(k, self.use_gpu):
            index = faiss.IndexHNSWFlat(d, ci.hnsw_m, faiss_metric)
            index.hnsw.efConstruction = ci.ef_construction
            index.hnsw.efSearch = ci.ef_search
            faiss.omp_set_num_threads(1)
            try:
                index.add(c)
            finally:
                faiss.omp_set_num_threads(self.threads)
            self._graph = (index, 0)
            return index
        index = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        if self.use_gpu:
            index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        index.add(c)
        return index

    def _search(
        self, rows: MemoryRows | SpilledRows, centroids: np.ndarray, hint: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Nearest centroid of every row, chunk by chunk: (start, rows, assignments int64, distances float32).

        ``hint`` (HNSW only): a previous assignment of the same rows to the same centroids (moved);
        a row keeps its hinted centroid when the graph search returns a farther one, so a missed
        neighbour never moves a point to a worse cluster than Lloyd's last one: with
        ``d(x, c) = ||x||^2 - 2 x.c + ||c||^2`` (cosine: ``1 - x.c``) for the hinted ``c``.
        """
        index = self._index(centroids, moved=hint is not None)
        hnsw = isinstance(index, faiss.IndexHNSW)
        width = 1 if hnsw else len(centroids)  # HNSW keeps no (rows, k) distance tile
        c = np.ascontiguousarray(centroids, dtype=np.float32)
        for a, block in rows.blocks(self._rows(width)):
            dd, ii = index.search(block, 1)
            if hnsw and (lost := ii[:, 0] < 0).any():  # a row the graph search left unmatched: exact
                dd[lost], ii[lost] = self._index(centroids, exact=True).search(block[lost], 1)
            dist = 1.0 - dd[:, 0] if self.metric == "cosine" else np.maximum(dd[:, 0], 0.0)
            ai = ii[:, 0]
            if hnsw and hint is not None:
                h = hint[a : a + len(block)]
                dot = np.einsum("ij,ij->i", block, c[h])
                if self.metric == "cosine":
                    dh = 1.0 - dot
                else:
                    dh = np.maximum(
                        np.einsum("ij,ij->i", block, block) - 2.0 * dot + np.einsum("ij,ij->i", c[h], c[h]), 0
                    )
                better = (h >= 0) & (dh < dist)
                ai = np.where(better, h, ai)
                dist = np.where(better, dh, dist).astype(np.float32)
            yield a, block, ai, dist

    def _sq_dist(self, candidates: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``||x_i - c_j||^2 = ||x_i||^2 - 2 x_i . c_j + ||c_j||^2`` for active rows, (m, rows) per chunk."""
        c = np.ascontiguousarray(candidates, dtype=np.float32)
        csq = np.einsum("ij,ij->i", c, c)
        # BLAS threads capped like FAISS's: oversubscribed OpenBLAS threads spin (10x slower seen)
        with _THREADPOOLS.limit(limits=self.threads, user_api="blas"):
            for a, block in self.xa.blocks(self._rows(len(c))):
                d2 = self.sqa[a : a + len(block)][None, :] - 2.0 * (c @ block.T) + csq[:, None]
                yield a, np.maximum(d2, 0.0)

    # ---- k-means++ (min-distances stay here; only scalars and candidate vectors leave) -----------
    def pp_reset(self, first_centre: np.ndarray) -> float:
        """Start k-means++: ``D(x) = ||x - c_1||^2``; returns the local potential ``sum_x D(x)``."""
        self._min_d2 = np.empty(len(self.xa), dtype=np.float32)
        for a, d2 in self._sq_dist(first_centre[None, :]):
            self._min_d2[a : a + d2.shape[1]] = d2[0]
        return float(self._min_d2.sum(dtype=np.float64))

    def pp_pick(self, thresholds: np.ndarray) -> np.ndarray:
        """Candidates for local potential thresholds r: the first row with ``cumsum(D) > r``."""
        cum = np.cumsum(self._min_d2, dtype=np.float64)
        pos = np.minimum(np.searchsorted(cum, thresholds, side="right"), len(cum) - 1)
        return self.xa.take(pos)

    def pp_trial(self, candidates: np.ndarray) -> np.ndarray:
        """Potential after adding each candidate: ``phi_j = sum_x min(D(x), ||x - c_j||^2)``.

        In memory the (m, n) trial distances are kept for :meth:`pp_commit`; out of core only the
        candidates are, and the chosen one's distances are recomputed chunk by chunk (same values).
        """
        keep = not self.out_of_core
        self._trial_d2 = np.empty((len(candidates), len(self.xa)), dtype=np.float32) if keep else None
        self._candidates = np.array(candidates, dtype=np.float32)
        phi = np.zeros(len(candidates), dtype=np.float64)
        for a, d2 in self._sq_dist(self._candidates):
            trial = np.minimum(d2, self._min_d2[None, a : a + d2.shape[1]])
            phi += trial.sum(axis=1, dtype=np.float64)
            if keep:
                self._trial_d2[:, a : a + d2.shape[1]] = trial
        return phi

    def pp_commit(self, j: int) -> float:
        """Keep trial candidate ``j`` as the next centre; returns the new local potential."""
        if self._trial_d2 is not None:
            self._min_d2 = self._trial_d2[j]
        else:
            for a, d2 in self._sq_dist(self._candidates):
                np.minimum(d2[j], self._min_d2[a : a + d2.shape[1]], out=self._min_d2[a : a + d2.shape[1]])
        self._trial_d2 = self._candidates = None
        return float(self._min_d2.sum(dtype=np.float64))

    # ---- Lloyd ---------------------------------------------------------------------------------------
    def lloyd_stats(self, centroids: np.ndarray, warm: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
        """Assign active rows; return per-cluster sums (k, D) float64, counts (k,), inertia.

        ``warm``: ``centroids`` are the previous call's, updated (the next Lloyd iteration), so the
        previous assignment is a hint for an approximate (HNSW) search (:meth:`_search`).
        Sums use a sparse one-hot product ``S = onehot(assign)^T X`` per chunk (same result as
        ``np.add.at`` but ~5x faster; the float64 accumulation keeps shard order irrelevant).
        """
        k = len(centroids)
        sums = np.zeros((k, self.xa.dim), dtype=np.float64)
        counts = np.zeros(k, dtype=np.int64)
        hint = self._fit_assign if warm and self._fit_assign is not None else None
        self._fit_dist = np.empty(len(self.xa), dtype=np.float32)
        fit_assign = np.empty(len(self.xa), dtype=np.int32 if k < 2**31 else np.int64)
        for a, block, ai, dist in self._search(self.xa, centroids, hint):
            self._fit_dist[a : a + len(block)] = dist
            fit_assign[a : a + len(block)] = ai
            onehot = sp.csr_matrix((np.ones(len(ai)), (ai, np.arange(len(ai)))), shape=(k, len(ai)))
            sums += onehot @ block.astype(np.float64)
            counts += np.bincount(ai, minlength=k)
        self._fit_assign = fit_assign
        return sums, counts, float(self._fit_dist.sum(dtype=np.float64))

    def farthest(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``m`` active rows farthest from their centroid in the last :meth:`lloyd_stats`.

        Returns (distances desc, global indices, vectors); ties broken by the smaller index.
        """
        gidx = self._active_global()
        order = np.lexsort((gidx, -self._fit_dist.astype(np.float64)))[:m]
        return self._fit_dist[order], gidx[order], self.xa.take(order)

    # ---- assignment of all rows, resampling sample ------------------------------------------------
    def assign_all(self, centroids: np.ndarray, moved: bool = False) -> tuple[np.ndarray, float]:
        """Assign every row (not only active ones); returns (counts (k,), inertia).

        ``moved``: ``centroids`` are the last Lloyd fit's, updated once (the end of a k-means run), so
        the fit's assignment is a hint for the rows it covered (:meth:`_search`). Assignments are
        kept as int32 when ``k < 2^31``.
        """
        hint = (self._moved_hint if self._fit_assign is None else self._fit_hint()) if moved else None
        self._moved_hint = None
        k = len(centroids)
        if self.assign.dtype != (dtype := np.int32 if k < 2**31 else np.int64):
            self.assign = self.assign.astype(dtype)
        for a, block, ai, dist in self._search(self.rows, centroids, hint):
            self.assign[a : a + len(block)] = ai
            self.dist[a : a + len(block)] = dist
        return np.bincount(self.assign, minlength=k).astype(np.int64), float(self.dist.sum(dtype=np.float64))

    def assignments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(global indices, assignments, distances) of every row (in-process API, small data)."""
        return np.arange(self.offset, self.offset + len(self.rows)), self.assign.astype(np.int64), self.dist

    def write_step_part(self, prefix: str, k: int) -> np.ndarray:
        """Write this shard's part of a finished step; returns its per-cluster counts (k,).

        Files ``<prefix>-<name>.npy`` (fsspec URI): ``assignments`` (n,) int64 and ``distances``
        (n,) float32 in row order, ``sorted_clusters`` (n,) int64 global indices sorted by
        (cluster, distance, index) and ``sorted_distances``; the driver merges the parts.
        """
        import fsspec

        n, step = len(self.rows), max(1, self._rows(1))
        order = np.lexsort((self.dist, self.assign))  # stable: ties keep the smaller index
        parts = {
            "assignments": (np.int64, lambda a, b: self.assign[a:b]),
            "distances": (np.float32, lambda a, b: self.dist[a:b]),
            "sorted_clusters": (np.int64, lambda a, b: order[a:b] + self.offset),
            "sorted_distances": (np.float32, lambda a, b: self.dist[order[a:b]]),
        }
        for name, (dtype, get) in parts.items():
            with fsspec.open(f"{prefix}-{name}.npy", "wb") as fh:
                write_npy_blocks(fh, dtype, n, (get(a, b) for a, b in blocks_of(n, step)))
        return np.bincount(self.assign, minlength=k).astype(np.int64)

    def _sample_keys(self, strategy: str, seed: int) -> np.ndarray:
        if strategy == "closest":
            return self.dist.astype(np.float64)
        if strategy == "random":
            return splitmix64_uniform(np.arange(self.offset, self.offset + len(self.rows)), seed)
        raise ValueError(f"resampling_strategy must be 'closest' or 'random', got {strategy!r}")

    def sample_candidates(
        self, per_cluster: int, strategy: str, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local top-``per_cluster`` rows of every cluster by (key, global index).

        Key: distance to the centroid (``closest``) or a counter-based uniform draw (``random``,
        i.e. uniform sampling without replacement). Returns (cluster, key, global index) arrays.
        """
        keys = self._sample_keys(strategy, seed)
        order = np.lexsort((keys, self.assign))  # stable: ties keep the smaller index
        a_sorted = self.assign[order]
        starts = np.searchsorted(a_sorted, a_sorted, side="left")
        keep = order[np.arange(len(order)) - starts < per_cluster]
        return self.assign[keep].astype(np.int64), keys[keep], keep + self.offset

    def select_sample(self, thr_key: np.ndarray, thr_index: np.ndarray, strategy: str, seed: int) -> int:
        """Activate rows with ``(key, index) <= (thr_key[c], thr_index[c])`` of their cluster c."""
        keys = self._sample_keys(strategy, seed)
        gidx = np.arange(self.offset, self.offset + len(self.rows))
        tk, ti = thr_key[self.assign], thr_index[self.assign]
        mask = (keys < tk) | ((keys == tk) & (gidx <= ti))
        return self.set_active(np.flatnonzero(mask))

    def members(self, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(assignments, vectors) of the rows currently assigned to any of ``clusters`` (split mode)."""
        index = np.flatnonzero(np.isin(self.assign, clusters))
        return self.assign[index].astype(np.int64), self.rows.take(index)


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
