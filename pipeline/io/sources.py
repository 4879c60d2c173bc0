"""Input sources: folder trees, Parquet files with an image-bytes column, WebDataset tar shards
(one module each in :mod:`pipeline.io.formats`, the registry this module dispatches through).

Every source yields rows ``id`` (stable string), ``uri`` (where the bytes live; see
:func:`load_image_bytes`), ``image`` (encoded bytes), ``_read_error`` (null unless the bytes could
not be read) and the carried input columns (``label`` from class folders, other Parquet columns,
WebDataset text members).

URIs: a file path/URI for folder trees; ``<parquet file>#<row>`` for Parquet rows;
``<tar file>#<member name>`` for tar members. Paths may be local or any fsspec URI.

Folder trees are listed with byte names (``os.fsencode``), carried as ``list<binary>`` (never a
newline-joined string) and read by absolute path under the input root. Every listed file becomes
exactly one row: an image, or a row whose ``_read_error`` says why it was refused:
``invalid-name`` (not UTF-8, or control characters such as a newline: such a name cannot be an id)
and ``outside-input`` (a symbolic link that resolves outside the input root, unless
``input.follow_symlinks`` is true). The embed step routes those rows to ``rejects.parquet``.

Reading is split into *work units* listed on the driver (one file, one Parquet row group, one tar
shard); Ray Data expands them into rows in parallel (:func:`read_images`), and the same expansion
runs without Ray in :func:`iter_images`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import field, fields
from typing import Any

import fsspec
import pyarrow as pa

from pipeline.config import schema
from pipeline.io.formats import UNIT_SCHEMA, empty_rows, format_of_file, input_format, registry
from pipeline.io.fs import split_uri

BUNDLED_SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "sample"
)


@schema("input/default")
class InputConfig:
    """Where the images are and how to read them; every default is in ``conf/input/default.yaml``."""

    path: str | None  # folder, Parquet file/folder/glob, tar shard(s); None = bundled sample
    format: str  # auto | folder | parquet | tar | embeddings
    image_column: str
    id_column: str
    embedding_column: str  # embeddings input: the vector column
    id_path: str | None  # embeddings input from .npy: the ids (.npy or one per line)
    label_from_folder: bool  # folder trees: first folder below the root -> ``label``
    columns: list[str] | None  # carried columns (None = all but the image column)
    limit: int | None  # read at most this many rows (debugging, tests)
    units_per_block: int  # work units per Ray Data block (small blocks balance the embedding actors)
    read_tasks: int | None  # concurrent read tasks (None: Ray Data decides); each is a worker process
    files_per_unit: int  # folder trees: image files per work unit
    follow_symlinks: bool  # folder trees: read links that resolve outside the root
    rows_per_unit: int  # Parquet: rows per work unit (a row group is split into slices)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict | None) -> InputConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        extra = {k: cfg.pop(k) for k in list(cfg) if k not in known}
        return cls(**cfg, extra=extra)

    @property
    def resolved_path(self) -> str:
        return self.path or BUNDLED_SAMPLE


def detect_format(path: str) -> str:
    """The input format of ``path`` from file suffixes (a file, a glob's first match, or a folder whose
    files are all of one ``whole_folder`` format); ``folder`` otherwise."""
    fs, p, _ = split_uri(path)
    if any(ch in p for ch in "*?["):
        matches = fs.glob(p)
        sample = matches[0] if matches else p
        return format_of_file(sample)
    if not fs.exists(p):
        raise FileNotFoundError(f"input.path does not exist: {path!r}")
    if not fs.isdir(p):
        return format_of_file(p)
    files = [f for f in fs.find(p) if not os.path.basename(f).startswith(".")]
    if not files:
        raise ValueError(f"input folder {path!r} is empty")
    kinds = {format_of_file(f) for f in files}
    kind = kinds.pop() if len(kinds) == 1 else "folder"
    return kind if registry()[kind].whole_folder else "folder"


# ---- work units -------------------------------------------------------------------------------
def list_units(cfg: InputConfig) -> pa.Table:
    """Driver-side listing of work units (:data:`pipeline.io.formats.UNIT_SCHEMA`): columns
    ``kind`` (the format), ``file``, ``root``, ``rows`` (Parquet ``group:start:length``), ``names``
    (folder trees: file names relative to ``root``, as bytes) and ``offset`` (first row number)."""
    path = cfg.resolved_path
    fmt = input_format(detect_format(path) if cfg.format == "auto" else cfg.format)
    units = fmt.list_units(cfg, path)
    if not units:
        raise ValueError(f"no input found at {path!r}")
    return pa.Table.from_pylist(units, schema=UNIT_SCHEMA)


class ExpandUnits:
    """Ray Data callable: a batch of work units -> a batch of image rows (each by its format's ``expand``)."""

    def __init__(self, cfg: dict | InputConfig):
        self.cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)

    def __call__(self, units: pa.Table) -> pa.Table:
        tables = [input_format(u["kind"]).expand(self.cfg, u) for u in units.to_pylist()]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return empty_rows()
        return pa.concat_tables(tables, promote_options="default")


# ---- public readers -----------------------------------------------------------------------------
def iter_images(cfg: dict | InputConfig, batch_units: int = 1) -> Iterator[pa.Table]:
    """Plain (no Ray) reader: yields row batches in the same order as :func:`read_images`."""
    cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)
    units = list_units(cfg)
    expand = ExpandUnits(cfg)
    seen = 0
    for start in range(0, units.num_rows, batch_units):
        batch = expand(units.slice(start, batch_units))
        if cfg.limit is not None:
            batch = batch.slice(0, max(0, cfg.limit - seen))
        seen += batch.num_rows
        if batch.num_rows:
            yield batch
        if cfg.limit is not None and seen >= cfg.limit:
            return


def read_images(cfg: dict | InputConfig):
    """Ray Dataset of image rows; block order follows the input order (deterministic ids)."""
    import ray

    cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)
    units = list_units(cfg)
    step = max(1, cfg.units_per_block)
    # One block per group of units, built on the driver: no repartition (an all-to-all step whose
    # default 1-CPU tasks may not fit beside the embedding actors on small nodes).
    ds = ray.data.from_arrow([units.slice(i, step) for i in range(0, units.num_rows, step)])
    compute = ray.data.TaskPoolStrategy(size=cfg.read_tasks) if cfg.read_tasks else None
    ds = ds.map_batches(
        _expand_units,
        fn_kwargs={"cfg": cfg},
        batch_size=cfg.units_per_block,
        batch_format="pyarrow",
        num_cpus=0.25,
        compute=compute,
    )
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    return ds


def _expand_units(units: pa.Table, cfg: InputConfig) -> pa.Table:
    return ExpandUnits(cfg)(units)


def load_image_bytes(uri: str) -> bytes:
    """Encoded bytes of one image by its ``uri`` (file, ``file.parquet#row``, ``shard.tar#member``)."""
    base, _, frag = uri.partition("#")
    fmt = registry().get(format_of_file(base)) if frag else None
    if fmt is not None and fmt.load is not None:
        return fmt.load(base, frag)
    with fsspec.open(uri, "rb") as fh:  # a plain file (whose name may contain '#')
        return fh.read()
