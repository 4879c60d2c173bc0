"""The rows an export writes: the chosen source table, its class and sample keys, repeats expanded.

Sources (paths named in :mod:`pipeline.artifacts`): ``curated`` (``manifest.parquet``), ``coreset``
(``coreset/manifest.parquet``), ``active`` (``active/labels.parquet``), ``labels`` (the swipe
labeler's ``labels/labels.parquet``). A source without a ``uri`` column gets it, and the other
carried columns, from the run's embeddings by id.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.artifacts import (
    ACTIVE_LABELS,
    CORESET,
    EMBEDDINGS,
    LABEL_FILES,
    LABELS,
    MANIFEST,
    carried_columns,
    embedding_files,
)
from pipeline.rundir import RunDir

SOURCES = {  # source -> (path inside the run, job that writes it)
    "curated": (MANIFEST.name, MANIFEST.job),
    "coreset": (CORESET.name, CORESET.job),
    "active": (ACTIVE_LABELS.name, ACTIVE_LABELS.job),
    "labels": (LABELS / LABEL_FILES["labels"], "label action=export"),
}
FORMATS = ("imagefolder", "webdataset", "jsonl")
MODES = ("link", "copy")
MULTIPLICITY = ("repeat", "flatten")
NO_CLASS = "_none"  # ImageFolder class of a row whose class value is null


@dataclass(frozen=True)
class ExportConfig:
    """``format``, ``source`` and the ``export.*`` settings of ``conf/export.yaml``, checked."""

    format: str
    source: str
    class_column: str | None
    shard_size: int
    mode: str
    multiplicity: str

    @classmethod
    def from_job(cls, format: str, source: str, export: dict) -> ExportConfig:
        for key, value, choices in (
            ("format", format, FORMATS),
            ("source", source, tuple(SOURCES)),
            ("export.mode", export["mode"], MODES),
            ("export.multiplicity", export["multiplicity"], MULTIPLICITY),
        ):
            if value not in choices:
                raise ValueError(f"{key}={value}: choose one of {', '.join(choices)}")
        if int(export["shard_size"]) < 1:
            raise ValueError(f"export.shard_size={export['shard_size']}: must be at least 1")
        return cls(
            format,
            source,
            export.get("class_column"),
            int(export["shard_size"]),
            str(export["mode"]),
            str(export["multiplicity"]),
        )


def read_source(run: RunDir, source: str) -> pa.Table:
    """The source's table, with ``uri`` and carried columns joined from the embeddings when it lacks them."""
    name, job = SOURCES[source]
    if not run.exists(name):
        raise FileNotFoundError(f"run_dir={run.root} holds no {name} (source={source}): run `strata {job}` first")
    with fsspec.open(run.path(name), "rb") as fh:
        table = pq.read_table(fh)
    if "uri" in table.column_names or not run.exists(EMBEDDINGS):
        return table
    ids = table.column("id").combine_chunks()
    parts = []
    for f in embedding_files(run):
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            cols = [c for c in carried_columns(pf.schema_arrow.names) if c == "id" or c not in table.column_names]
            t = pf.read(columns=cols)
        parts.append(t.filter(pc.is_in(t.column("id"), value_set=ids)))
    extra = pa.concat_tables(parts, promote_options="default")
    if extra.num_columns == 1:
        return table
    order = pa.array(np.arange(table.num_rows))
    joined = table.append_column("_order", order).join(extra, keys="id", join_type="left outer")
    return joined.sort_by("_order").drop_columns(["_order"])


def class_column(table: pa.Table, cfg: ExportConfig) -> str:
    """``export.class_column``, else ``label`` when present, else ``level_1``."""
    if cfg.class_column:
        if cfg.class_column not in table.column_names:
            raise ValueError(
                f"export.class_column={cfg.class_column}: no such column in source={cfg.source} "
                f"(columns: {', '.join(table.column_names)})"
            )
        return cfg.class_column
    for name in ("label", "level_1"):
        if name in table.column_names:
            return name
    raise ValueError(
        f"source={cfg.source} has neither 'label' nor 'level_1': set export.class_column to one of "
        f"{', '.join(table.column_names)}"
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sample_key(item_id: str) -> str:
    """A file-name-safe key without dots (WebDataset splits member names at the first dot): the
    sanitised id plus a short hash of the exact id, so ids that sanitise alike stay apart."""
    stem = _UNSAFE.sub("_", item_id).strip("_")[:100] or "item"
    return f"{stem}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"


def class_name(value: object) -> str:
    """A folder name for a class value (``level_1`` ids become ``00017``-style names sort in order)."""
    if value is None:
        return NO_CLASS
    if isinstance(value, (int, np.integer)):
        return f"{int(value):05d}"
    name = re.sub(r"[/\\\x00-\x1f]+", "_", str(value)).strip() or NO_CLASS
    return "_" + name if name in (".", "..") else name


def export_rows(table: pa.Table, cfg: ExportConfig) -> tuple[pa.Table, np.ndarray, list[str]]:
    """(table, source row of every sample (M,) int64, key of every sample): ``multiplicity=repeat``
    writes a row ``multiplicity`` times (keys ``<key>``, ``<key>_r1``, ...), ``flatten`` once."""
    n = table.num_rows
    if cfg.multiplicity == "repeat" and "multiplicity" in table.column_names:
        reps = np.maximum(table.column("multiplicity").to_numpy(zero_copy_only=False).astype(np.int64), 1)
    else:
        reps = np.ones(n, np.int64)
    rows = np.repeat(np.arange(n), reps)
    starts = np.repeat(np.cumsum(reps) - reps, reps)
    copy = np.arange(len(rows)) - starts
    base = [sample_key(i) for i in table.column("id").to_pylist()]
    keys = [base[r] if c == 0 else f"{base[r]}_r{c}" for r, c in zip(rows.tolist(), copy.tolist())]
    return table, rows, keys
