"""``strata index`` step: embeddings table of a run -> ``<run_dir>/index`` with a done-marker."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import fsspec
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS, INDEX, INDEX_CONFIG, input_fingerprint
from pipeline.io.tables import list_parquet_files
from pipeline.progress import Progress
from pipeline.rundir import INPUT, RunDir
from pipeline.search.index import IndexConfig, SearchIndex
from pipeline.search.service import embed_config_of

log = logging.getLogger(__name__)

STEP = INDEX.step


def build_run_index(
    run: RunDir,
    cfg: IndexConfig | Mapping[str, Any] | None = None,
    force: bool = False,
    batch_rows: int | None = None,
    source: str | None = None,
) -> dict:
    """Build (or reuse) the index of ``run``'s embeddings (or of the embeddings at ``source``),
    ``batch_rows`` rows at a time (None: ``batch_rows`` of ``conf/index.yaml``).

    The index, its id/metadata table and config are written under the run's ``index/`` through a
    staging directory; a rerun with the same config and the same embeddings skips.
    """
    cfg = cfg if isinstance(cfg, IndexConfig) else IndexConfig.from_dict(cfg)
    inputs = {INPUT: input_fingerprint(source)} if source else [EMBEDDINGS]
    config = {k: v for k, v in asdict(cfg).items() if k != "use_gpu"}
    with run.step(STEP, config, inputs, force=force) as step:
        if step.skipped and run.exists(INDEX_CONFIG):
            return step.result
        step.skipped = False  # outputs gone under a finished marker: rebuild
        t0 = time.perf_counter()
        path = source or run.path(EMBEDDINGS)
        with Progress("index", embedding_rows(path), run=run, unit="rows", log_interval=10.0) as bar:
            index = SearchIndex.from_embeddings(path, cfg, batch_rows=batch_rows, progress=bar)
        index.info["embed"] = embed_config_of(run)
        index.info["source"] = source or str(EMBEDDINGS)
        with run.staging(INDEX) as tmp:
            index.save(tmp)
        step.result = {
            "n": index.n,
            "dim": index.dim,
            "partitions": len(index.partitions),
            "kinds": sorted({p.kind for p in index.partitions}),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        log.info("index: %s", step.result)
    return step.result


def embedding_rows(path: str) -> int | None:
    """Rows of the embeddings table at ``path``, from the Parquet footers (None when there is none:
    the build then reports the missing table itself)."""
    try:
        files = list_parquet_files(path)
    except FileNotFoundError:
        return None
    rows = 0
    for f in files:
        with fsspec.open(f, "rb") as fh:
            rows += pq.ParquetFile(fh).metadata.num_rows
    return rows or None


__all__ = ["build_run_index", "embedding_rows", "STEP"]
