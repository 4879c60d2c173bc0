"""Embeddings made elsewhere as the input (``input.format=embeddings``): text, images, audio, anything.

Two layouts:

- Parquet (file, folder or glob) with an id column ``input.id_column`` (any integer or string type)
  and a vector column ``input.embedding_column`` (fixed-size or variable list of float16/32/64);
  every other column is carried (``input.columns`` narrows them);
- a ``.npy`` (N, D) float array, ids from ``input.id_path`` (a ``.npy`` array or a text file with
  one id per line; row numbers when unset).

Each row becomes a row of the run's embeddings table: ``id`` (string: ids are normalised to text,
the original type is recorded), ``embedding`` (``fixed_size_list<float32>[D]``) and the carried
columns (the original id column stays under its own name when that is not ``id``; a carried
``uri`` column of image paths lets the image-only steps use the pictures). A row without a vector,
with NaN/inf in it or without an id goes to the rejects with a reason. Problems that would make the
whole input unusable (a missing column, vectors of different lengths, duplicate ids) are one-line
``ValueError``s raised before anything is written.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.sources import InputConfig
from pipeline.io.tables import EMBEDDING, embeddings_to_arrow, list_parquet_files

FORMAT = "embeddings"
BATCH_ROWS = 65536
FLOAT_TYPES = ("halffloat", "float", "double")


_REJECT_REASONS = (
    None,
    "nan-embedding: the vector holds NaN or inf",
    "missing-embedding: no vector in input.embedding_column",
    "missing-id: no value in input.id_column",
)


def is_embeddings_input(cfg: dict | InputConfig) -> bool:
    """Whether ``cfg`` reads embeddings rather than images (``input.format=embeddings`` or a ``.npy`` path)."""
    cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)
    return cfg.format == FORMAT or (cfg.format == "auto" and str(cfg.path or "").endswith(".npy"))


@dataclass
class EmbeddingsInput:
    """What :func:`check_embeddings_input` found: the files, id type, vector type and width (None:
    variable lists, known after reading) and the carried columns."""

    files: list[str]
    id_type: str
    embedding_type: str
    dim: int | None
    carried: list[str]

    def record(self, cfg: InputConfig) -> dict:
        """The facts ``run.json`` keeps about the import."""
        return {
            "source": FORMAT,
            "id_column": cfg.id_column,
            "id_type": self.id_type,
            "embedding_column": cfg.embedding_column,
            "embedding_type": self.embedding_type,
        }


def _missing(kind: str, name: str, available: list[str], key: str) -> ValueError:
    close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
    hint = f"did you mean {key}={close[0]}?" if close else f"columns: {', '.join(available[:12])}"
    return ValueError(f"{key}={name}: no such {kind} column in the embeddings input; {hint}")


def _is_npy(cfg: InputConfig) -> bool:
    return str(cfg.resolved_path).endswith(".npy")


def check_embeddings_input(cfg: InputConfig) -> EmbeddingsInput:
    """Check the columns and types of the input from its schemas alone (no vectors are read)."""
    if _is_npy(cfg):
        x = _load_npy(cfg.resolved_path)
        if x.ndim != 2 or x.dtype.name not in ("float16", "float32", "float64"):
            raise ValueError(
                f"input.path={cfg.resolved_path}: expected an (N, D) float16/32/64 array, got {x.dtype.name} {x.shape}"
            )
        ids = _npy_ids(cfg, len(x))
        return EmbeddingsInput([cfg.resolved_path], str(ids.type), f"{x.dtype.name}[{x.shape[1]}]", x.shape[1], [])
    files = list_parquet_files(cfg.resolved_path)
    if not files:
        raise ValueError(f"input.path={cfg.resolved_path}: no Parquet files")
    schemas = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            schemas.append(pq.read_schema(fh))
    names = list(dict.fromkeys(n for s in schemas for n in s.names))
    for s in schemas:
        if cfg.id_column not in s.names:
            raise _missing("id", cfg.id_column, s.names, "input.id_column")
        if cfg.embedding_column not in s.names:
            raise _missing("embedding", cfg.embedding_column, s.names, "input.embedding_column")
    id_type = schemas[0].field(cfg.id_column).type
    vec_type = schemas[0].field(cfg.embedding_column).type
    if not (pa.types.is_integer(id_type) or pa.types.is_string(id_type) or pa.types.is_large_string(id_type)):
        raise ValueError(f"input.id_column={cfg.id_column}: ids must be integers or strings, got {id_type}")
    is_list = pa.types.is_list(vec_type) or pa.types.is_large_list(vec_type) or pa.types.is_fixed_size_list(vec_type)
    if not is_list or str(vec_type.value_type) not in FLOAT_TYPES:
        raise ValueError(
            f"input.embedding_column={cfg.embedding_column}: expected a list of float16/32/64, got {vec_type}"
        )
    for s, f in zip(schemas[1:], files[1:]):
        if s.field(cfg.embedding_column).type != vec_type or s.field(cfg.id_column).type != id_type:
            raise ValueError(
                f"{f}: columns {cfg.id_column}/{cfg.embedding_column} have types "
                f"{s.field(cfg.id_column).type}/{s.field(cfg.embedding_column).type}, "
                f"other files {id_type}/{vec_type}"
            )
    clash = sorted(({"id", EMBEDDING} & set(names)) - {cfg.id_column, cfg.embedding_column})
    if clash:
        raise ValueError(
            f"the embeddings input has a column {clash[0]!r} besides input.id_column={cfg.id_column} and "
            f"input.embedding_column={cfg.embedding_column}; Strata names its own columns so: rename it"
        )
    wanted = [c for c in names if c != cfg.embedding_column] if cfg.columns is None else list(cfg.columns)
    for c in wanted:
        if c not in names:
            raise _missing("carried", c, names, "input.columns entry")
    carried = [c for c in wanted if not (c == cfg.id_column == "id") and c != cfg.embedding_column]
    dim = vec_type.list_size if pa.types.is_fixed_size_list(vec_type) else None
    return EmbeddingsInput(files, str(id_type), str(vec_type), dim, carried)


def _load_npy(path: str) -> np.ndarray:
    fs, p = fsspec.core.url_to_fs(path)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return np.load(p, mmap_mode="r")  # memory-mapped: read batch by batch
    with fs.open(p, "rb") as fh:
        return np.load(fh)


def _npy_ids(cfg: InputConfig, n: int) -> pa.Array:
    """Ids of the ``.npy`` rows: ``input.id_path`` (``.npy`` or one id per line), else row numbers."""
    path = cfg.id_path
    if not path:
        return pa.array(np.arange(n, dtype=np.int64))
    if str(path).endswith(".npy"):
        with fsspec.open(path, "rb") as fh:
            ids = pa.array(np.load(fh, allow_pickle=False).tolist())
    else:
        with fsspec.open(path, "r", encoding="utf-8") as fh:
            ids = pa.array([line.rstrip("\r\n") for line in fh if line.strip()], pa.string())
    if len(ids) != n:
        raise ValueError(f"input.id_path={path}: {len(ids)} ids for {n} vectors in {cfg.resolved_path}")
    return ids


# ---- reading ----------------------------------------------------------------------------------
def _batches(cfg: InputConfig, spec: EmbeddingsInput) -> Iterator[tuple[str, int, pa.Table]]:
    """(file, first row, table with ``_id`` and ``_vec`` plus the carried columns) batches in input order."""
    if _is_npy(cfg):
        x = _load_npy(cfg.resolved_path)
        ids = _npy_ids(cfg, len(x))
        for start in range(0, len(x), BATCH_ROWS):
            block = np.asarray(x[start : start + BATCH_ROWS])
            vec = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[1])
            yield cfg.resolved_path, start, pa.table({"_id": ids.slice(start, len(block)), "_vec": vec})
        return
    columns = list(dict.fromkeys([cfg.id_column, cfg.embedding_column, *spec.carried]))
    for f in spec.files:
        with fsspec.open(f, "rb") as fh:
            start = 0
            for batch in pq.ParquetFile(fh).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                t = pa.Table.from_batches([batch])
                out = {"_id": t.column(cfg.id_column), "_vec": t.column(cfg.embedding_column)}
                out.update({c: t.column(c) for c in spec.carried})
                yield f, start, pa.table(out)
                start += t.num_rows


def iter_embeddings(cfg: InputConfig, spec: EmbeddingsInput) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(kept rows, rejected rows) per batch: kept as ``id, embedding, *carried``, rejected as
    ``id, uri, reason``. Raises ValueError on vectors of different lengths or duplicate ids."""
    dim = spec.dim
    seen_ids: list[pa.Array] = []
    read = 0
    for f, start, t in _batches(cfg, spec):
        if cfg.limit is not None:
            t = t.slice(0, max(0, cfg.limit - read))
            if not t.num_rows:
                return
        read += t.num_rows
        vec = t.column("_vec").combine_chunks()
        ids = pc.cast(t.column("_id").combine_chunks(), pa.string())
        lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
        null_vec = np.isnan(lengths.astype(np.float64))
        if dim is None and (~null_vec).any():
            dim = int(lengths[~null_vec][0])
        ragged = np.flatnonzero(~null_vec & (lengths != (dim or 0)))
        if len(ragged):
            r = int(ragged[0])
            raise ValueError(
                f"input.embedding_column={cfg.embedding_column}: vectors of different lengths ({dim} and "
                f"{int(lengths[r])}, first at id {ids[r].as_py()!r}); every row needs the same dimension"
            )
        x = np.zeros((t.num_rows, dim or 0), np.float32)
        ok = ~null_vec
        if ok.any():
            flat = vec.filter(pa.array(ok)).flatten().to_numpy(zero_copy_only=False)
            x[ok] = flat.astype(np.float32).reshape(-1, dim)  # null elements became NaN
        finite = np.isfinite(x).all(axis=1)
        null_id = pc.is_null(ids).to_numpy(zero_copy_only=False)
        code = np.zeros(t.num_rows, np.int8)  # index into _REJECT_REASONS (0: kept); later checks win
        code[~finite], code[null_vec], code[null_id] = 1, 2, 3
        rejected, good = np.flatnonzero(code), np.flatnonzero(code == 0)
        rel = os.path.basename(f)
        bad_ids = [ids[int(r)].as_py() or f"{rel}#{start + int(r)}" for r in rejected]
        uri = t.column("uri") if "uri" in t.column_names else pa.nulls(t.num_rows, pa.string())
        rejects = pa.table(
            {
                "id": pa.array(bad_ids, pa.string()),
                "uri": pc.take(uri, pa.array(rejected, pa.int64())).cast(pa.string()),
                "reason": pa.array([_REJECT_REASONS[c] for c in code[rejected]], pa.string()),
            }
        )
        take = pa.array(good, pa.int64())
        kept = pa.table(
            {
                "id": ids.take(take),
                EMBEDDING: embeddings_to_arrow(x[good]) if dim else pa.array([], pa.list_(pa.float32(), 1)),
                **{c: t.column(c).take(take) for c in t.column_names if c not in ("_id", "_vec")},
            }
        )
        seen_ids.append(kept.column("id").combine_chunks())
        yield kept, rejects
    _check_unique(cfg, seen_ids)


def _check_unique(cfg: InputConfig, ids: list[pa.Array]) -> None:
    if not ids:
        return
    everything = pa.chunked_array(ids, pa.string())
    if pc.count_distinct(everything).as_py() == len(everything):
        return
    counts = pc.value_counts(everything)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    raise ValueError(
        f"input.id_column={cfg.id_column}: id {repeated[0]['values'].as_py()!r} appears "
        f"{repeated[0]['counts'].as_py()} times ({len(repeated)} ids repeat); ids must be unique"
    )
