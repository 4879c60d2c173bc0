"""``strata dedup``: exact + semantic near-duplicate removal over a run's embeddings.

Reads ``<run>/embeddings``, writes ``<run>/dedup/duplicates.parquet`` (``id``, ``kept_id``,
``similarity``, ``kind`` in {exact, semantic}) and ``<run>/dedup/kept.parquet`` (``id``): every
input id is in exactly one of them. ``pipeline.kmeans.run_cluster`` drops the duplicate ids.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pyarrow as pa

from pipeline.artifacts import EMBEDDINGS, read_run_embeddings, write_dedup
from pipeline.dedup.config import dedup_config
from pipeline.dedup.hashing import PIXEL_HASH, PixelHashStage
from pipeline.dedup.semantic import exact_duplicates, keep_priority, semantic_duplicates
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)

COUNTS = ("input", "kept", "duplicates", "exact", "semantic")


def find_duplicates(
    x: np.ndarray, hashes: list[str | None] | None, cfg: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact then semantic duplicates of (N, D) ``x``.

    Returns:
        (kept_of (N,) int64 representative row (itself when kept), similarity (N,) float32,
         kind (N,) int8: 0 kept, 1 exact, 2 semantic).
    """
    c = dedup_config(cfg)
    n = len(x)
    kept_of = np.arange(n, dtype=np.int64)
    similarity = np.ones(n, dtype=np.float32)
    kind = np.zeros(n, dtype=np.int8)
    if n == 0:
        return kept_of, similarity, kind
    from pipeline.kmeans import kmeans

    k = c["n_clusters"] or max(1, math.ceil(n / c["points_per_cluster"]))
    k = min(int(k), n)
    # kmeans normalises its input in place for the cosine metric: hand it a copy.
    _, assignments, distances = kmeans(np.array(x, dtype=np.float32), k, c["n_iters"], metric="cosine", seed=c["seed"])
    priority = keep_priority(n, c["keep"], centroid_distance=distances, seed=c["seed"])
    if c["exact"] and hashes is not None:
        dup, kept = exact_duplicates(hashes, priority)
        kept_of[dup], kind[dup] = kept, 1
    if c["semantic"]:
        rest = np.flatnonzero(kind == 0)
        local_kept, local_sim = semantic_duplicates(
            x[rest], assignments[rest], float(c["eps"]), priority[rest], block=c["block"]
        )
        removed = local_kept != np.arange(len(rest))
        kept_of[rest[removed]] = rest[local_kept[removed]]
        similarity[rest[removed]] = local_sim[removed]
        kind[rest[removed]] = 2
        # Exact copies whose representative was then removed semantically follow it to its keeper.
        moved = np.flatnonzero((kind == 1) & (kind[kept_of] == 2))
        similarity[moved] = similarity[kept_of[moved]]
        kept_of[moved] = kept_of[kept_of[moved]]
        kind[moved] = 2
    return kept_of, similarity, kind


def compute_pixel_hashes(table: pa.Table) -> list[str | None]:
    """Pixel hash per row from the ``pixel_hash`` column if present, else by loading ``uri``."""
    if PIXEL_HASH in table.column_names:
        return table.column(PIXEL_HASH).to_pylist()
    if "uri" not in table.column_names:
        raise KeyError("exact dedup needs a 'pixel_hash' or 'uri' column in the embeddings table")
    return PixelHashStage()(table.select(["uri"])).column(PIXEL_HASH).to_pylist()


def run_dedup(run: RunDir, cfg: dict, *, force: bool = False) -> dict:
    """Find exact and semantic duplicates in ``run``'s embeddings; write ``dedup/``; return ``COUNTS``.

    The step's record (marker, run.json) adds timings and the settings that decide the result."""
    c = dedup_config(cfg)
    with run.step("dedup", c, inputs=[EMBEDDINGS], force=force) as step:
        if step.skipped:
            return {k: step.result[k] for k in COUNTS}
        t0 = time.perf_counter()
        table, x = read_run_embeddings(run)
        hashes = compute_pixel_hashes(table) if c["exact"] else None
        t_hash = time.perf_counter() - t0
        kept_of, similarity, kind = find_duplicates(x, hashes, c)
        ids = table.column("id").combine_chunks()
        dup = np.flatnonzero(kind > 0)
        kept = np.flatnonzero(kind == 0)
        if len(kept) + len(dup) != len(ids) or (kind[kept_of[dup]] != 0).any():
            raise AssertionError("dedup accounting broken: every row must be kept or point at a kept row")
        duplicates = pa.table(
            {
                "id": ids.take(pa.array(dup)),
                "kept_id": ids.take(pa.array(kept_of[dup])),
                "similarity": pa.array(similarity[dup], pa.float32()),
                "kind": pa.array(np.where(kind[dup] == 1, "exact", "semantic").tolist(), pa.string()),
            }
        )
        write_dedup(run, duplicates, pa.table({"id": ids.take(pa.array(kept))}))
        counts = {
            "input": len(ids),
            "kept": int(len(kept)),
            "duplicates": int(len(dup)),
            "exact": int((kind == 1).sum()),
            "semantic": int((kind == 2).sum()),
        }
        step.result = {
            **counts,
            "hash_s": round(t_hash, 2),
            "total_s": round(time.perf_counter() - t0, 2),
            "eps": c["eps"],
            "keep": c["keep"],
        }
        log.info("dedup: %s", counts)
    return counts
