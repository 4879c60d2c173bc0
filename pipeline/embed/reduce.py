"""Output dimension of the embeddings (``embed.dim``): PCA fitted on the pool, or an SSL projection head.

PCA on the kept embeddings ``X`` (N, D): mean ``mu``, covariance ``C = (X - mu)^T (X - mu) / (N - 1)``,
components ``W`` (dim, D) = the eigenvectors of ``C`` with the ``dim`` largest eigenvalues (each signed
so that its largest-magnitude coordinate is positive, for reproducible outputs); reduced embeddings
``Y = (X - mu) W^T``, L2-normalised again when ``embed.l2_normalize``. The fit uses at most
``FIT_ROWS`` rows drawn uniformly (seeded). ``W`` and ``mu`` are kept in ``embeddings/_pca.npz`` so
a query can be projected the same way (:func:`query_transform`, used by ``strata search``/``serve``
and ``strata active``'s starter images); the choice is recorded in the ``embed`` step result
(``run.json`` counts) and in each part's Parquet metadata (``strata.reduction``).

``embed.reduce=head`` (``embed=ssl`` only) embeds with the checkpoint's trained projection head
instead; its output width must equal ``embed.dim``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS
from pipeline.atomic import atomic_path
from pipeline.embed.config import EmbedConfig
from pipeline.io.tables import EMBEDDING, embeddings_to_arrow, list_parquet_files
from pipeline.rundir import RunDir

FIT_ROWS = 200_000
PCA_FILE = "_pca.npz"
METADATA_KEY = b"strata.reduction"


@dataclass(frozen=True)
class PCA:
    """A fitted PCA: ``mean`` (D,), ``components`` (dim, D), ``explained_variance_ratio`` (dim,)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray, l2_normalize: bool) -> np.ndarray:
        """(N, D) -> (N, dim) float32, rows scaled to unit norm when ``l2_normalize`` (``embed.l2_normalize``)."""
        y = (np.asarray(x, np.float64) - self.mean) @ self.components.T
        if l2_normalize:
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        return y.astype(np.float32)


def fit_pca(x: np.ndarray, dim: int) -> PCA:
    """PCA of the rows of ``x`` (N, D) keeping ``dim`` components (see module docstring)."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    if not 1 <= dim <= min(d, n - 1):
        raise ValueError(f"embed.dim={dim}: PCA needs 1 <= dim <= min(D={d}, N-1={n - 1})")
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    top = np.argsort(eigenvalues)[::-1][:dim]
    components = eigenvectors[:, top].T
    signs = np.sign(components[np.arange(dim), np.abs(components).argmax(axis=1)])
    components *= signs[:, None]
    total = max(float(eigenvalues.clip(min=0).sum()), 1e-300)
    return PCA(mean, components, eigenvalues[top].clip(min=0) / total)


def _sample_rows(files: list[str], fs, limit: int, seed: int) -> np.ndarray:
    sizes = [pq.ParquetFile(fs.open(f, "rb")).metadata.num_rows for f in files]
    total = sum(sizes)
    pick = np.sort(np.random.default_rng(seed).choice(total, size=min(limit, total), replace=False))
    offsets = np.cumsum([0, *sizes])
    parts = []
    for i, f in enumerate(files):
        local = pick[(pick >= offsets[i]) & (pick < offsets[i + 1])] - offsets[i]
        if len(local):
            column = pq.read_table(fs.open(f, "rb"), columns=[EMBEDDING]).column(EMBEDDING).combine_chunks()
            parts.append(column.flatten().to_numpy().reshape(len(column), -1)[local])
    return np.concatenate(parts)


def reduce_run_embeddings(run: RunDir, cfg: EmbedConfig, seed: int = 0) -> dict[str, Any]:
    """Apply ``embed.dim`` to the finished ``embeddings/`` of ``run`` (rewritten in place); returns
    what to record (``{"dim": ..., "reduction": {...}}``), or ``{}`` when ``embed.dim`` is null."""
    if cfg.dim is None:
        return {}
    dim = int(cfg.dim)
    files = list_parquet_files(run.path(EMBEDDINGS))
    if not files:
        return {}
    fs = run.fs
    width = pq.read_schema(fs.open(files[0], "rb")).field(EMBEDDING).type.list_size
    if cfg.reduce == "head":
        if width != dim:
            raise ValueError(f"embed.dim={dim} but the checkpoint's projection head outputs {width}")
        return {"dim": dim, "reduction": {"method": "head", "from": None, "dim": dim}}
    if width == dim:
        return {"dim": dim, "reduction": {"method": "none", "from": width, "dim": dim}}
    pca = fit_pca(_sample_rows(files, fs, FIT_ROWS, seed), dim)
    record = {
        "method": "pca",
        "from": int(width),
        "dim": dim,
        "fit_rows": int(min(FIT_ROWS, sum(pq.ParquetFile(fs.open(f, "rb")).metadata.num_rows for f in files))),
        "explained_variance": round(float(pca.explained_variance_ratio.sum()), 6),
        "l2_normalize": bool(cfg.l2_normalize),
    }
    for f in files:
        table = pq.read_table(fs.open(f, "rb"))
        column = table.column(EMBEDDING).combine_chunks()
        reduced = pca.transform(column.flatten().to_numpy().reshape(len(column), -1), cfg.l2_normalize)
        table = table.set_column(table.schema.get_field_index(EMBEDDING), EMBEDDING, embeddings_to_arrow(reduced))
        meta = {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(record).encode()}
        with atomic_path(f, fs) as tmp, fs.open(tmp, "wb") as fh:
            pq.write_table(table.replace_schema_metadata(meta), fh)
    buf = io.BytesIO()
    np.savez(buf, mean=pca.mean, components=pca.components, explained_variance_ratio=pca.explained_variance_ratio)
    with fs.open(f"{run.path(EMBEDDINGS)}/{PCA_FILE}", "wb") as fh:
        fh.write(buf.getvalue())
    return {"dim": dim, "reduction": record}


def _load_pca(fs, path: str) -> PCA | None:
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        z = np.load(io.BytesIO(fh.read()))
        return PCA(z["mean"], z["components"], z["explained_variance_ratio"])


def read_reduction(run: RunDir) -> PCA | None:
    """The PCA that ``reduce_run_embeddings`` fitted for ``run`` (None when there is none)."""
    return _load_pca(run.fs, f"{run.path(EMBEDDINGS)}/{PCA_FILE}")


def query_transform(source: RunDir | str, dim: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The map from a query's embeddings (N, D) to the space of the embeddings at ``source`` (a run,
    or an embeddings folder/URI): PCA-reduced like the pool when the parts record ``method: pca``
    (centre, project, re-normalise as recorded), unchanged when D already is the stored width (no
    reduction, or ``embed.reduce=head``, whose embedder already outputs the projection); any other
    width is a one-line ``ValueError``. ``dim``: the expected width when ``source`` holds no parts."""
    if isinstance(source, RunDir):
        fs, root = source.fs, source.path(EMBEDDINGS)
    else:
        fs, root = fsspec.core.url_to_fs(str(source))
    files = (
        sorted(f for f in fs.find(root) if f.endswith(".parquet") and not os.path.basename(f).startswith((".", "_")))
        if fs.isdir(root)
        else []
    )
    width, record, pca = dim, None, None
    if files:
        with fs.open(files[0], "rb") as fh:
            schema = pq.read_schema(fh)
        kind = schema.field(EMBEDDING).type if EMBEDDING in schema.names else None
        width = kind.list_size if kind is not None and pa.types.is_fixed_size_list(kind) else dim
        record = embeddings_metadata(schema)
    if record and record.get("method") == "pca":
        pca = _load_pca(fs, f"{root}/{PCA_FILE}")
        if pca is None:
            raise FileNotFoundError(f"{root} records a PCA reduction but has no {PCA_FILE} to project queries with")
    l2 = bool(record and record.get("l2_normalize"))

    def transform(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if width is None or width <= 0 or x.shape[1] == width:
            return x
        if pca is not None and x.shape[1] == pca.components.shape[1]:
            return pca.transform(x, l2)
        via = f" (PCA from {pca.components.shape[1]})" if pca is not None else ""
        raise ValueError(
            f"query embeddings are {x.shape[1]}-d but the run's embeddings are {width}-d{via}; "
            "embed queries with the embed config the run was made with"
        )

    return transform


def embeddings_metadata(table_or_schema: pa.Table | pa.Schema) -> dict[str, Any] | None:
    """The ``strata.reduction`` record of an embeddings part (None when not reduced)."""
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else None
