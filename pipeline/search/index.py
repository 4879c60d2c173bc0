"""FAISS nearest-neighbour index over an embeddings table, optionally partitioned by carried columns.

``SearchIndex`` holds one FAISS index per *partition* (one distinct value tuple of the
``partition_by`` columns, e.g. ``(date_month, product)``; a single partition when none), the
row metadata (``id``, ``uri`` and carried columns, in global row order) and the config.

Index kinds, chosen per partition (``kind=auto``: exact below ``flat_max`` rows, else ``large_kind``):

- ``flat``: exact ``IndexFlatIP`` / ``IndexFlatL2``;
- ``ivf_flat`` / ``ivf_pq``: inverted lists over ``nlist`` k-means cells, trained on a seeded
  sample of the partition; ``nprobe`` cells are scanned per query;
  default ``nlist = clip(round(4 sqrt(n)), 1, n // 39)`` (FAISS wants >= 39 training points per cell);
- ``hnsw``: ``IndexHNSWFlat`` graph (``M``, ``efConstruction``, ``efSearch``).

Scores are similarities, larger is closer: ``<q, x>`` for ``metric=ip`` (the cosine when
``normalize=true``, which L2-normalises database and query vectors), ``-||q - x||^2`` for ``l2``.

Filters (:mod:`pipeline.search.filters`) evaluate to a row mask; partitions without any matching row
are skipped, partially matching ones are searched with a FAISS ``IDSelectorBitmap``, and the
per-partition top-k lists are merged by score.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import faiss
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.artifacts import PIXEL_HASH, carried_columns
from pipeline.io.tables import EMBEDDING, iter_embedding_batches, list_parquet_files
from pipeline.search.config import KINDS, IndexConfig, conf_default  # noqa: F401 - KINDS re-exported
from pipeline.search.filters import Filters, filter_mask

if TYPE_CHECKING:
    from pipeline.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _flat(dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    return faiss.IndexFlatIP(dim) if cfg.metric == "ip" else faiss.IndexFlatL2(dim)


def _hnsw(dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    index = faiss.index_factory(dim, f"HNSW{cfg.hnsw_m},Flat", cfg.faiss_metric)
    index.hnsw.efConstruction = int(cfg.ef_construction)
    index.hnsw.efSearch = int(cfg.ef_search)
    return index


def _seeded_ivf(index: faiss.Index, cfg: IndexConfig) -> faiss.Index:
    """Seed an IVF index's k-means (and PQ's) and set its ``nprobe``."""
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.seed = int(cfg.seed)
    ivf.nprobe = int(cfg.nprobe)
    if hasattr(ivf, "pq"):
        ivf.pq.cp.seed = int(cfg.seed)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False  # only helps Hamming pre-filtering, which we never use; slow
    return index


def _ivf_flat(dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    return _seeded_ivf(faiss.index_factory(dim, f"IVF{cfg.nlist_for(n)},Flat", cfg.faiss_metric), cfg)


def _ivf_pq(dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    if dim % cfg.pq_m:
        raise ValueError(f"pq_m={cfg.pq_m} must divide the embedding dimension {dim}")
    if cfg.pq_fastscan and cfg.pq_nbits != 4:
        raise ValueError(f"pq_fastscan needs pq_nbits=4, got {cfg.pq_nbits}")
    code = f"PQ{cfg.pq_m}x{cfg.pq_nbits}" + ("fs" if cfg.pq_fastscan else "")
    refine = ",RFlat" if cfg.refine_factor else ""
    index = faiss.index_factory(dim, f"IVF{cfg.nlist_for(n)},{code}{refine}", cfg.faiss_metric)
    if cfg.refine_factor:
        index.k_factor = float(cfg.refine_factor)
    return _seeded_ivf(index, cfg)


# index kind -> builder of an empty (untrained) FAISS index (dim, n, cfg)
INDEX_BUILDERS = {"flat": _flat, "hnsw": _hnsw, "ivf_flat": _ivf_flat, "ivf_pq": _ivf_pq}


def new_faiss_index(kind: str, dim: int, n: int, cfg: IndexConfig) -> faiss.Index:
    """An empty (untrained) FAISS index of ``kind`` for ``n`` vectors of dimension ``dim``."""
    if kind not in INDEX_BUILDERS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_BUILDERS)}")
    return INDEX_BUILDERS[kind](dim, n, cfg)


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass
class Partition:
    """One FAISS index over the rows ``rows`` (ascending global row numbers) sharing ``key``."""

    key: dict[str, Any]
    rows: np.ndarray
    index: faiss.Index
    kind: str
    gpu_index: Any = None  # GPU copy used for unfiltered queries when configured

    @property
    def n(self) -> int:
        return int(len(self.rows))


def _selector_params(part: Partition, local_mask: np.ndarray, nprobe: int, ef_search: int):
    """FAISS search parameters restricting ``part.index`` to ``local_mask`` (bitmap kept alive)."""
    bits = np.packbits(local_mask, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(local_mask), faiss.swig_ptr(bits))
    if part.kind.startswith("ivf"):
        params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        if isinstance(part.index, faiss.IndexRefine):
            params = faiss.IndexRefineSearchParameters(k_factor=part.index.k_factor, base_index_params=params)
            return params, (bits, sel, params.base_index_params)
    elif part.kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=sel, efSearch=ef_search)
    else:
        params = faiss.SearchParameters(sel=sel)
    return params, (bits, sel)


def _is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols


def _write_bytes(uri: str, data: bytes) -> None:
    with fsspec.open(uri, "wb") as fh:
        fh.write(data)


def _read_bytes(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as fh:
        return fh.read()


class SearchIndex:
    """Partitioned FAISS index + row metadata. Build with :meth:`build` / :meth:`from_embeddings`."""

    def __init__(
        self, cfg: IndexConfig, meta: pa.Table, partitions: list[Partition], dim: int, info: dict | None = None
    ):
        if "id" not in meta.column_names:
            raise ValueError("index metadata needs an 'id' column")
        self.cfg = cfg
        self.meta = meta
        self.partitions = partitions
        self.dim = int(dim)
        self.info = dict(info or {})
        self.ids = np.asarray(meta.column("id").to_pylist(), dtype=str)  # fixed-width unicode, no Python objects
        self._row_of: dict[str, int] | None = None
        self._part_of_row: np.ndarray | None = None
        self._local_of_row: np.ndarray | None = None
        self._gpu_res = None
        if cfg.use_gpu:
            self.to_gpu()

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        x: np.ndarray,
        ids: Sequence[str] | pa.Array | None = None,
        cfg: IndexConfig | Mapping[str, Any] | None = None,
        meta: pa.Table | None = None,
    ) -> SearchIndex:
        """Index the in-memory embeddings ``x`` (N, D) with ids ``ids`` (or ``meta['id']``)."""
        cfg = cfg if isinstance(cfg, IndexConfig) else IndexConfig.from_dict(cfg)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
        if meta is None:
            if ids is None:
                raise ValueError("give ids or a metadata table with an 'id' column")
            meta = pa.table({"id": pa.array(list(ids) if not isinstance(ids, pa.Array) else ids, pa.string())})
        elif ids is not None:
            meta = meta.drop_columns([c for c in ("id",) if c in meta.column_names]).add_column(
                0, "id", pa.array(list(ids), pa.string())
            )
        if meta.num_rows != len(x):
            raise ValueError(f"{meta.num_rows} ids/metadata rows for {len(x)} embeddings")
        step = max(1, cfg.add_batch)
        return cls._build(meta, lambda: (x[i : i + step] for i in range(0, len(x), step)), x.shape[1], cfg)

    @classmethod
    def from_embeddings(
        cls,
        path: str | Sequence[str],
        cfg: IndexConfig | Mapping[str, Any] | None = None,
        batch_rows: int | None = None,
        progress: Progress | None = None,
    ) -> SearchIndex:
        """Stream an embeddings table (``id``, ``embedding``, carried columns) into an index.

        Two streamed passes over the vectors (training sample, then adds; one when every partition
        is exact); only metadata columns are held in memory, ``batch_rows`` vectors at a time (None:
        ``batch_rows`` of ``conf/index.yaml``). ``progress`` counts the rows added, one update per batch.
        """
        cfg = cfg if isinstance(cfg, IndexConfig) else IndexConfig.from_dict(cfg)
        files = list_parquet_files(path)
        if not files:
            raise FileNotFoundError(f"no embeddings under {path!r}")
        with fsspec.open(files[0], "rb") as fh:
            schema = pq.read_schema(fh)
        if EMBEDDING not in schema.names or "id" not in schema.names:
            raise ValueError(
                f"{files[0]} is not an embeddings table (needs 'id' and '{EMBEDDING}'), has {schema.names}"
            )
        meta_cols = [c for c in carried_columns(schema.names) if c != PIXEL_HASH]  # signatures are dedup's
        tables = []
        for f in files:
            with fsspec.open(f, "rb") as fh:
                tables.append(pq.read_table(fh, columns=meta_cols))
        meta = pa.concat_tables(tables, promote_options="default")
        etype = schema.field(EMBEDDING).type
        if pa.types.is_fixed_size_list(etype):
            dim = etype.list_size
        else:
            dim = next(iter_embedding_batches(files, batch_rows=1, columns=()))[1].shape[1]
        rows = conf_default("index", "batch_rows") if batch_rows is None else batch_rows

        def batches() -> Iterator[np.ndarray]:
            for _, x in iter_embedding_batches(files, batch_rows=rows, columns=()):
                yield x

        return cls._build(meta, batches, dim, cfg, progress)

    @classmethod
    def _build(
        cls,
        meta: pa.Table,
        batches: Callable[[], Iterable[np.ndarray]],
        dim: int,
        cfg: IndexConfig,
        progress: Progress | None = None,
    ) -> SearchIndex:
        t0 = time.perf_counter()
        n = meta.num_rows
        if pc.count_distinct(meta.column("id")).as_py() != n:
            raise ValueError("ids must be unique to build an index")
        missing = [c for c in cfg.partition_by if c not in meta.column_names]
        if missing:
            raise ValueError(f"partition_by columns {missing} are not in the table; columns: {meta.column_names}")
        part_of_row, keys = partition_rows(meta, cfg.partition_by)
        order = np.argsort(part_of_row, kind="stable")
        bounds = np.cumsum(np.bincount(part_of_row, minlength=len(keys)))[:-1]
        partitions = []
        for key, rows in zip(keys, np.split(order, bounds)):
            kind = cfg.kind_for(len(rows))
            partitions.append(Partition(key, rows.astype(np.int64), new_faiss_index(kind, dim, len(rows), cfg), kind))

        needs_training = [p for p, part in enumerate(partitions) if not part.index.is_trained]
        if needs_training:
            rng = np.random.default_rng(cfg.seed)
            samples = {
                p: np.sort(
                    rng.choice(
                        partitions[p].rows,
                        cfg.train_size_for(partitions[p].n, faiss.extract_index_ivf(partitions[p].index).nlist),
                        replace=False,
                    )
                )
                for p in needs_training
            }
            sample_rows = np.concatenate(list(samples.values()))
            sample_owner = np.concatenate([np.full(len(s), p) for p, s in samples.items()])
            by_row = np.argsort(sample_rows, kind="stable")
            sample_rows, sample_owner = sample_rows[by_row], sample_owner[by_row]
            train = {p: [] for p in needs_training}
            offset = 0
            for x in batches():
                lo, hi = np.searchsorted(sample_rows, [offset, offset + len(x)])
                if hi > lo:
                    xs = cls._prepare_vectors(x[sample_rows[lo:hi] - offset], dim, cfg)
                    for p in np.unique(sample_owner[lo:hi]):
                        train[p].append(xs[sample_owner[lo:hi] == p])
                offset += len(x)
            for p in needs_training:
                xt = np.concatenate(train[p])
                log.info("training %s partition %s on %d vectors", partitions[p].kind, partitions[p].key, len(xt))
                partitions[p].index.train(xt)

        offset = 0
        single = len(partitions) == 1
        for x in batches():
            x = cls._prepare_vectors(x, dim, cfg)
            if single:
                partitions[0].index.add(x)
            else:
                owners = part_of_row[offset : offset + len(x)]
                for p in np.unique(owners):
                    partitions[p].index.add(x[owners == p])
            offset += len(x)
            if progress is not None:
                progress.update(len(x))
        if offset != n:
            raise ValueError(f"embedding stream has {offset} rows but metadata has {n}")
        for part in partitions:
            if part.kind.startswith("ivf") and not isinstance(part.index, faiss.IndexRefine):
                faiss.extract_index_ivf(part.index).make_direct_map()  # reconstruct(row) for query-by-id
        seconds = time.perf_counter() - t0
        log.info("indexed %d vectors (dim %d) in %d partition(s) in %.1fs", n, dim, len(partitions), seconds)
        return cls(cfg, meta, partitions, dim, info={"build_seconds": seconds})

    @staticmethod
    def _prepare_vectors(x: np.ndarray, dim: int, cfg: IndexConfig) -> np.ndarray:
        x = np.ascontiguousarray(np.atleast_2d(np.asarray(x, dtype=np.float32)))
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"vectors must have shape (n, {dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("vectors contain NaN or infinite values")
        if cfg.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(x, dtype=np.float32)

    # ---- queries -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.meta.num_rows

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change ``nprobe`` (IVF) / ``efSearch`` (HNSW) for later queries."""
        if nprobe is not None:
            self.cfg.nprobe = int(nprobe)
        if ef_search is not None:
            self.cfg.ef_search = int(ef_search)
        for part in self.partitions:
            for index in (part.index, part.gpu_index):
                if index is None:
                    continue
                if part.kind.startswith("ivf"):
                    faiss.extract_index_ivf(index).nprobe = self.cfg.nprobe
                elif part.kind == "hnsw":
                    index.hnsw.efSearch = self.cfg.ef_search

    def search_rows(self, vectors: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` global rows and scores per query: ``(Q, k)`` int64 (-1 = none) and float32 (-inf)."""
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = int(k)
        q = self._prepare_vectors(vectors, self.dim, self.cfg)
        mask = filter_mask(self.meta, filters)
        all_rows, all_scores = [], []
        for part in self.partitions:
            params, keep = None, None
            if mask is not None:
                local = mask[part.rows]
                if not local.any():
                    continue
                if not local.all():
                    params, keep = _selector_params(part, local, self.cfg.nprobe, self.cfg.ef_search)
            index = part.gpu_index if (params is None and part.gpu_index is not None) else part.index
            dist, labels = index.search(q, min(k, part.n), params=params)
            del keep
            found = labels >= 0
            all_rows.append(np.where(found, part.rows[np.maximum(labels, 0)], -1))
            scores = dist if self.cfg.metric == "ip" else -dist
            all_scores.append(np.where(found, scores, -np.inf).astype(np.float32))
        return merge_topk(all_rows, all_scores, k, len(q))

    def search(self, vectors: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids and scores per query: ``(Q, k)`` object array (None = no result) and float32."""
        rows, scores = self.search_rows(vectors, k, filters)
        ids = self.ids[np.maximum(rows, 0)].astype(object)  # None marks "no result", so the output holds objects
        ids[rows < 0] = None
        return ids, scores

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Global rows of ``ids``; raises ``KeyError`` naming the first unknown id."""
        if self._row_of is None:
            self._row_of = {i: r for r, i in enumerate(self.ids.tolist())}
        try:
            return np.array([self._row_of[i] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"unknown id {exc.args[0]!r}") from None

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """Stored (normalised; PQ-approximated for ivf_pq) vectors of global ``rows``: (n, D)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        owner, local = self._locate(rows)
        for i, (p, j) in enumerate(zip(owner, local)):
            out[i] = self.partitions[p].index.reconstruct(int(j))
        return out

    def _locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._part_of_row is None:
            part_of_row = np.empty(self.n, dtype=np.int32)
            local_of_row = np.empty(self.n, dtype=np.int64)
            for p, part in enumerate(self.partitions):
                part_of_row[part.rows] = p
                local_of_row[part.rows] = np.arange(part.n)
            self._part_of_row, self._local_of_row = part_of_row, local_of_row
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"rows out of range [0, {self.n})")
        return self._part_of_row[rows], self._local_of_row[rows]

    def records(self, rows: np.ndarray, scores: np.ndarray, columns: Sequence[str] | None = None) -> list[dict]:
        """One query's results as dicts: ``rank``, ``id``, ``score`` and the carried columns."""
        rows, scores = np.asarray(rows).reshape(-1), np.asarray(scores).reshape(-1)
        keep = rows >= 0
        cols = [c for c in (columns or self.meta.column_names) if c in self.meta.column_names]
        table = self.meta.select(cols).take(pa.array(rows[keep]))
        out = []
        for rank, (row, score) in enumerate(zip(table.to_pylist(), scores[keep])):
            out.append({"rank": rank, "id": row.pop("id", None), "score": float(score), **row})
        return out

    # ---- GPU ---------------------------------------------------------------------------------
    def to_gpu(self) -> bool:
        """Copy flat / IVF partitions to GPU 0 for unfiltered queries; False when no GPU faiss."""
        if not _gpu_available():
            log.warning("use_gpu=true but faiss has no GPU support or sees no GPU; searching on CPU")
            return False
        self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
        for part in self.partitions:
            if part.kind == "hnsw":
                continue
            try:
                part.gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, part.index)
            except RuntimeError as exc:  # e.g. fast-scan PQ or refine wrappers have no GPU version
                log.warning("partition %s (%s) stays on CPU: %s", part.key, part.kind, exc)
        return any(p.gpu_index is not None for p in self.partitions)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write ``config.json``, ``meta.parquet`` and ``part-NNNNN.{faiss,rows.npy}`` under ``path``."""
        fs, root = fsspec.core.url_to_fs(path)
        fs.makedirs(root, exist_ok=True)
        local = _is_local_fs(fs)
        parts = []
        for p, part in enumerate(self.partitions):
            name = f"part-{p:05d}"
            if local:
                faiss.write_index(part.index, f"{root}/{name}.faiss")
            else:
                _write_bytes(f"{path}/{name}.faiss", faiss.serialize_index(part.index).tobytes())
            with fs.open(f"{root}/{name}.rows.npy", "wb") as fh:
                np.save(fh, part.rows)
            parts.append({"key": part.key, "kind": part.kind, "n": part.n, "file": name})
        with fs.open(f"{root}/meta.parquet", "wb") as fh:
            pq.write_table(self.meta, fh)
        payload = {
            "format": FORMAT_VERSION,
            "config": asdict(self.cfg),
            "dim": self.dim,
            "n": self.n,
            "partitions": parts,
            "info": self.info,
        }
        with fs.open(f"{root}/config.json", "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)

    @classmethod
    def load(
        cls, path: str, nprobe: int | None = None, ef_search: int | None = None, use_gpu: bool | None = None
    ) -> SearchIndex:
        """Read an index written by :meth:`save`; optional query-time overrides."""
        fs, root = fsspec.core.url_to_fs(path)
        if not fs.exists(f"{root}/config.json"):
            raise FileNotFoundError(f"no index at {path!r} (run `strata index` first)")
        with fs.open(f"{root}/config.json", "r") as fh:
            payload = json.load(fh)
        if payload.get("format") != FORMAT_VERSION:
            raise ValueError(f"index format {payload.get('format')} is not supported (expected {FORMAT_VERSION})")
        cfg = IndexConfig.from_dict(payload["config"])
        if use_gpu is not None:
            cfg.use_gpu = bool(use_gpu)
        local = _is_local_fs(fs)
        with fs.open(f"{root}/meta.parquet", "rb") as fh:
            meta = pq.read_table(fh)
        partitions = []
        for entry in payload["partitions"]:
            name = entry["file"]
            if local:
                index = faiss.read_index(f"{root}/{name}.faiss")
            else:
                index = faiss.deserialize_index(np.frombuffer(_read_bytes(f"{path}/{name}.faiss"), dtype=np.uint8))
            with fs.open(f"{root}/{name}.rows.npy", "rb") as fh:
                rows = np.load(fh)
            partitions.append(Partition(entry["key"], rows, index, entry["kind"]))
        out = cls(cfg, meta, partitions, payload["dim"], info=payload.get("info"))
        out.set_search_params(nprobe=nprobe, ef_search=ef_search)
        return out

    def describe(self) -> dict:
        """Summary for ``/healthz`` and logs."""
        return {
            "n": self.n,
            "dim": self.dim,
            "metric": self.cfg.metric,
            "normalize": self.cfg.normalize,
            "partition_by": self.cfg.partition_by,
            "partitions": [{"key": p.key, "kind": p.kind, "n": p.n} for p in self.partitions],
            "columns": [c for c in self.meta.column_names if c != "id"],
            "gpu": any(p.gpu_index is not None for p in self.partitions),
        }


def partition_rows(meta: pa.Table, columns: Sequence[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Partition id of every row (N,) and each partition's key ``{column: value}``.

    Rows with equal values in all ``columns`` (nulls compare equal) share a partition; partitions are
    numbered in order of first appearance.
    """
    n = meta.num_rows
    if not columns:
        return np.zeros(n, dtype=np.int64), [{}]
    combined = np.zeros(n, dtype=np.int64)
    for col in columns:
        enc = pc.dictionary_encode(meta.column(col).combine_chunks(), null_encoding="encode")
        codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        combined = combined * (len(enc.dictionary) + 1) + codes
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first, kind="stable")
    renumber = np.empty_like(by_appearance)
    renumber[by_appearance] = np.arange(len(by_appearance))
    part_of_row = renumber[inverse.reshape(-1)]
    first_rows = first[by_appearance]
    key_table = meta.select(list(columns)).take(pa.array(first_rows)).to_pylist()
    return part_of_row.astype(np.int64), key_table


def merge_topk(
    rows: list[np.ndarray], scores: list[np.ndarray], k: int, n_queries: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-partition ``(Q, k_p)`` candidate lists into the global top-``k`` by score."""
    out_rows = np.full((n_queries, k), -1, dtype=np.int64)
    out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
    if not rows:
        return out_rows, out_scores
    if len(rows) == 1 and rows[0].shape[1] == k:
        return rows[0].astype(np.int64), scores[0]
    cand_rows, cand_scores = np.concatenate(rows, axis=1), np.concatenate(scores, axis=1)
    order = np.argsort(-cand_scores, axis=1, kind="stable")[:, :k]
    take = order.shape[1]
    out_rows[:, :take] = np.take_along_axis(cand_rows, order, axis=1)
    out_scores[:, :take] = np.take_along_axis(cand_scores, order, axis=1)
    return out_rows, out_scores


__all__ = ["IndexConfig", "SearchIndex", "Partition", "new_faiss_index", "partition_rows", "merge_topk", "KINDS"]
