"""``run_export``: write a run's selection to ``output`` in one format, atomically.

The output folder (local or any fsspec URI) is written under a temporary name and renamed when
complete; it holds the format's files and ``export.json`` (run, source, format, counts, failures).
"""

from __future__ import annotations

import json
import logging

import fsspec

from pipeline.atomic import atomic_path
from pipeline.export.rows import ExportConfig, export_rows, read_source
from pipeline.export.writers import NEEDS_IMAGES, WRITERS
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)
EXPORT_JSON = "export.json"


def run_export(run: RunDir, output: str | None, cfg: ExportConfig, *, force: bool = False) -> dict:
    """Export ``cfg.source`` of ``run`` to ``output`` as ``cfg.format``; returns the recorded counts."""
    if not output:
        raise ValueError("output=DIR is required: the folder (or fsspec URI) to write the dataset to")
    table = read_source(run, cfg.source)
    if cfg.format in NEEDS_IMAGES and "uri" not in table.column_names:
        raise ValueError(
            f"format={cfg.format} needs images, but source={cfg.source} has no 'uri' column "
            "(embeddings input without pictures): use format=jsonl"
        )
    fs, path = fsspec.core.url_to_fs(str(output))
    path = path.rstrip("/")
    if fs.exists(path) and (not fs.isdir(path) or fs.ls(path)) and not force:
        raise FileExistsError(f"output={output} exists and is not empty; force=true replaces it")
    table, rows, keys = export_rows(table, cfg)
    with atomic_path(path, fs) as tmp:
        fs.makedirs(tmp, exist_ok=True)
        counts = WRITERS[cfg.format](table, rows, keys, cfg, tmp, fs)
        record = {
            "run_dir": run.root,
            "source": cfg.source,
            "format": cfg.format,
            "mode": cfg.mode,
            "multiplicity": cfg.multiplicity,
            "rows": table.num_rows,
            "samples": int(len(rows)),
            **counts,
        }
        with fs.open(f"{tmp}/{EXPORT_JSON}", "w") as fh:
            json.dump(record, fh, indent=2, default=str)
    if record.get("failed"):
        log.warning("export: %d samples could not be read (listed in %s)", len(record["failed"]), EXPORT_JSON)
    return record
