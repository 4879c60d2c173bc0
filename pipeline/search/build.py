"""``strata index`` step: embeddings table of a run -> ``<run_dir>/index`` with a done-marker."""
from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any, Mapping

import fsspec

from pipeline.io.tables import list_parquet_files
from pipeline.rundir import RunDir
from pipeline.search.index import IndexConfig, SearchIndex
from pipeline.search.service import embed_config_of

log = logging.getLogger(__name__)

STEP = "index"


def _source_signature(source: str) -> list[tuple[str, int]]:
    """(file, size) of every embeddings shard: a rebuilt embeddings table invalidates the index."""
    out = []
    for f in list_parquet_files(source):
        fs, p = fsspec.core.url_to_fs(f)
        out.append((f, int(fs.info(p).get("size") or 0)))
    return out


def build_run_index(
    run: RunDir,
    cfg: IndexConfig | Mapping[str, Any] | None = None,
    force: bool = False,
    batch_rows: int = 65536,
    source: str | None = None,
) -> dict:
    """Build (or reuse) the index of ``run``'s embeddings; returns the step's marker info.

    The index, its id/metadata table and config are written under ``run.path("index")`` through a
    staging directory, then the ``index`` marker; a rerun with the same config and embeddings skips.
    """
    cfg = cfg if isinstance(cfg, IndexConfig) else IndexConfig.from_dict(cfg)
    source = source or run.path("embeddings")
    step_cfg = {"index": {k: v for k, v in asdict(cfg).items() if k != "use_gpu"}, "source": _source_signature(source)}
    if force:
        run.clear(STEP)
    if run.is_done(STEP, step_cfg) and run.exists("index", "config.json"):
        log.info("index already built for %s; skipping (force=true rebuilds)", source)
        return run.marker(STEP)
    t0 = time.perf_counter()
    index = SearchIndex.from_embeddings(source, cfg, batch_rows=batch_rows)
    index.info["embed"] = embed_config_of(run)
    index.info["source"] = source
    with run.staging("index") as tmp:
        index.save(tmp)
    counts = {
        "n": index.n,
        "dim": index.dim,
        "partitions": len(index.partitions),
        "kinds": sorted({p.kind for p in index.partitions}),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    run.mark_done(STEP, step_cfg, **counts)
    run.update_run_json(index=counts)
    log.info("index: %s", counts)
    return run.marker(STEP)


__all__ = ["build_run_index", "STEP"]
