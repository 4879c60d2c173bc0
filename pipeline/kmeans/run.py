"""``run_cluster``: hierarchical k-means of a run's embeddings on Ray actors, resumable per step.

Outputs under ``<run_dir>/clusters/``::

    points/part-XXXXX.parquet            index (int64), id (string): level-1 item index -> image id
    level_<l>/step_<s>/centroids.npy     (k, D) float32
                       assignments.npy   (n,) int64   cluster of every item (points / level l-1 clusters)
                       distances.npy     (n,) float32 distance to it (squared L2, or 1 - cos)
                       offsets.npy       (k+1,) int64 CSR offsets of the sorted clusters
                       sorted_clusters.npy  (n,) int64 item indices, by cluster then distance
                       sorted_distances.npy (n,) float32
    clusters.json                        levels, final step directory of each, counts

A marker ``cluster/level_<l>/step_<s>`` follows each step's outputs (fingerprint: the algorithm
settings up to that level and the step's inputs), and ``cluster`` follows ``clusters.json``. A
rerun loads the last finished step of a level, reassigns the points to its centroids (same
code, same result) and continues with the next step.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import (
    DUPLICATES,
    EMBEDDINGS,
    clear_cluster_points,
    cluster_points_part,
    duplicate_ids,
    embedding_files,
    load_step,
    save_step,
    write_clusters_json,
)
from pipeline.kmeans.algorithm import LocalGroup, RayGroup, ShardLost
from pipeline.kmeans.config import AUTO, auto_n_clusters
from pipeline.kmeans.hierarchical import KMeansConfig, fit_level, gather_level
from pipeline.kmeans.shard import Shard, ShardSource
from pipeline.progress import Progress
from pipeline.rundir import RunDir, Step

log = logging.getLogger(__name__)

MIN_POINTS_PER_CLUSTER = 3


def _step_name(level: int, step: int) -> str:
    return f"cluster/level_{level}/step_{step}"


def row_counts(files: list[str]) -> list[int]:
    """Rows of every Parquet file, from the footers only."""
    counts = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            counts.append(pq.ParquetFile(fh).metadata.num_rows)
    return counts


def plan_shards(files: list[str], n_shards: int, drop_ids_path: str | None = None) -> list[ShardSource]:
    """Split the rows of ``files`` (Parquet metadata only) into ``n_shards`` contiguous ranges."""
    counts = row_counts(files)
    starts = np.concatenate([[0], np.cumsum(counts)])
    bounds = np.linspace(0, starts[-1], n_shards + 1).astype(np.int64)
    sources = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        pieces = [
            (f, int(max(lo, s) - s), int(min(hi, s + c) - s))
            for f, s, c in zip(files, starts[:-1], counts)
            if max(lo, s) < min(hi, s + c)
        ]
        sources.append(ShardSource("parquet", tuple(pieces), drop_ids_path))
    return sources


def start_shards(sources: list[ShardSource], cfg: KMeansConfig):
    """One Ray actor per source (or in-process shards when ``cfg.in_process``), offsets set."""
    kwargs = dict(metric=cfg.metric, chunk_mb=cfg.chunk_mb, threads=cfg.threads_per_actor, use_gpu=cfg.use_gpu)
    if cfg.in_process:
        group: Any = LocalGroup([Shard(source=s, **kwargs) for s in sources])
    else:
        import ray

        # A restarted actor re-runs the constructor, which reads its rows again from ``source``;
        # calls in flight when it died fail (max_task_retries=0) and the step is recomputed.
        remote = ray.remote(
            num_cpus=cfg.cpus_per_actor,
            num_gpus=1 if cfg.use_gpu else 0,
            max_restarts=cfg.max_actor_restarts,
            max_task_retries=0,
        )(Shard)
        group = RayGroup([remote.remote(source=s, **kwargs) for s in sources])
    return group, set_offsets(group)


def set_offsets(group) -> int:
    """Give every shard the global index of its first row; returns the total row count."""
    sizes = np.asarray(group.call("size"), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group.call_each("set_offset", {i: (int(o),) for i, o in enumerate(offsets)})
    return int(sizes.sum())


def _n_actors(cfg: KMeansConfig) -> int:
    if cfg.n_actors:
        return int(cfg.n_actors)
    import ray

    res = ray.cluster_resources() if ray.is_initialized() else {}
    return max(1, int(res.get("GPU" if cfg.use_gpu else "CPU", 1)))


def run_cluster(
    run: RunDir, cfg: dict, *, force: bool = False, seed: int | None = None, drop_duplicates: bool | None = None
) -> dict:
    """Hierarchical k-means with resampling of the run's embeddings into ``clusters/``.

    Rows that dedup removed are left out: always with ``drop_duplicates=True`` (dedup must have
    run), never with ``False``, and with ``None`` when the run holds a current dedup output.
    Level 1 runs on Ray actors holding contiguous shards read by the actors themselves; upper
    levels cluster the (small) centroid sets in-process. Returns counts and timings.
    """
    if drop_duplicates is None:
        drop_duplicates = run.is_current(DUPLICATES)
    files = embedding_files(run)
    n_points = sum(row_counts(files)) - (len(duplicate_ids(run)) if drop_duplicates else 0)
    kc = KMeansConfig.from_dict(dict(cfg), seed=seed, n_points=n_points)
    if cfg.get("n_clusters") == AUTO:
        log.info("kmeans.n_clusters=auto: %s clusters per level for %d points", list(kc.n_clusters), n_points)
    warnings = check_sizes(kc, n_points, embedding_dim(files[0]), _n_actors(kc)) if files and n_points else []
    inputs = [EMBEDDINGS, *([DUPLICATES] if drop_duplicates else [])]
    with run.step("cluster", kc.algorithm_fingerprint(len(kc.levels)), inputs, force=force) as step:
        if step.skipped:
            return {**step.result, "skipped": True}
        auto = cfg.get("n_clusters") == AUTO
        step.result = {**_fit_levels(run, kc, step, drop_duplicates), "n_clusters_auto": auto, "warnings": warnings}
    return step.result


def embedding_dim(path: str) -> int:
    """Width of the ``embedding`` column of one embeddings file (schema, else its first row)."""
    with fsspec.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        field = pf.schema_arrow.field("embedding")
        if pa.types.is_fixed_size_list(field.type):
            return int(field.type.list_size)
        first = next(pf.iter_batches(batch_size=1, columns=["embedding"]), None)
        return 0 if first is None or not first.num_rows else len(first.column(0)[0])


def check_sizes(kc: KMeansConfig, n_points: int, dim: int, n_actors: int) -> list[str]:
    """Warn (and return the warnings) when level-1 clusters average fewer than
    ``MIN_POINTS_PER_CLUSTER`` points, or one actor's rows + centroids exceed its share of memory."""
    warnings = []
    k1 = kc.levels[0].n_clusters
    if n_points / k1 < MIN_POINTS_PER_CLUSTER:
        warnings.append(
            f"kmeans level 1: {k1} clusters for {n_points} points ({n_points / k1:.1f} per cluster): "
            f"clusters this small make balanced sampling close to random; kmeans.n_clusters=auto picks "
            f"{auto_n_clusters(n_points)}"
        )
    need = (n_points / max(n_actors, 1) + k1) * dim * 4 + kc.chunk_mb * 2**20
    share = _memory_bytes() / max(n_actors, 1)
    if need > share:
        warnings.append(
            f"kmeans level 1: one of {n_actors} actors needs ~{need / 2**30:.1f} GiB (rows + {k1} centroids of "
            f"{dim} floats) but has ~{share / 2**30:.1f} GiB: use more actors/machines, fewer clusters, or "
            f"split mode (kmeans.n_splits)"
        )
    for w in warnings:
        log.warning(w)
    return warnings


def _memory_bytes() -> float:
    """Memory Ray may schedule (the whole cluster), else this machine's physical memory."""
    import os

    try:
        import ray

        if ray.is_initialized():
            return float(ray.cluster_resources().get("memory", 0)) or float("inf")
    except ImportError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _fit_levels(run: RunDir, kc: KMeansConfig, step: Step, drop_duplicates: bool) -> dict[str, Any]:
    """Every level, resuming from the last finished resampling step of each (sub-step markers)."""
    t_start = time.perf_counter()
    files = embedding_files(run)
    dup = run.path(DUPLICATES) if drop_duplicates else None
    fps = [step.sub_fingerprint(algorithm=kc.algorithm_fingerprint(lv)) for lv in range(1, len(kc.levels) + 1)]
    if step.force:
        run.clear(
            *(_step_name(lv, s) for lv, lc in enumerate(kc.levels, start=1) for s in range(lc.n_resampling_steps + 1))
        )
    summary: dict[str, Any] = {"levels": [], "recovered_shard_failures": 0}
    group = None
    previous: np.ndarray | None = None
    try:
        for level, lc in enumerate(kc.levels, start=1):
            t_level = time.perf_counter()
            fp = fps[level - 1]
            n_steps = lc.n_resampling_steps + 1
            done = 0
            while done < n_steps and run.is_done(_step_name(level, done), {**fp, "step": done}):
                done += 1
            ran = n_steps - done
            if done < n_steps:
                if level == 1:
                    sources = plan_shards(files, _n_actors(kc), dup)
                    group, _ = start_shards(sources, kc)
                    clear_cluster_points(run)
                    group.call_each("write_ids", {i: (cluster_points_part(run, i),) for i in range(len(group))})
                else:
                    group = LocalGroup([Shard(previous, metric=kc.metric, chunk_mb=kc.chunk_mb)])
                bar = Progress(f"kmeans/level_{level}", total=n_steps, run=run, unit="step")
                if done:
                    bar.update(done, resumed_steps=done)

                def on_step(
                    step: int,
                    centroids: np.ndarray,
                    counts: np.ndarray,
                    inertia: float,
                    level: int = level,
                    group: Any = group,
                    fp: dict = fp,
                    bar: Progress = bar,
                ) -> None:
                    save_step(run, level, step, gather_level(group, centroids))
                    run.mark_done(
                        _step_name(level, step),
                        {**fp, "step": step},
                        inertia=inertia,
                        non_empty=int((counts > 0).sum()),
                    )
                    bar.update(inertia=round(float(inertia), 4), non_empty=int((counts > 0).sum()))

                with bar:
                    for attempt in range(kc.max_step_retries + 1):
                        start_centroids = None
                        if done > 0:  # resume: every point assigned to the last finished step's centroids
                            start_centroids = load_step(run, level, done - 1).centroids
                        try:
                            if attempt:  # restarted shards reloaded their rows; restore the rest of their state
                                group.wait_alive()
                                set_offsets(group)
                            if start_centroids is not None:
                                group.call("assign_all", start_centroids)
                            fit_level(group, lc, kc, level, start_step=done, centroids=start_centroids, on_step=on_step)
                            break
                        except ShardLost as exc:
                            if attempt == kc.max_step_retries:
                                raise
                            while done < n_steps and run.is_done(_step_name(level, done), {**fp, "step": done}):
                                done += 1
                            log.warning(
                                "level %d: %s; recomputing from step %d (retry %d of %d)",
                                level,
                                exc,
                                done,
                                attempt + 1,
                                kc.max_step_retries,
                            )
                            summary["recovered_shard_failures"] += 1
                group.close()
                group = None
            final = load_step(run, level, n_steps - 1)
            previous = final.centroids
            info = run.marker(_step_name(level, n_steps - 1))
            summary["levels"].append(
                {
                    "level": level,
                    "n_clusters": lc.n_clusters,
                    "n_items": int(len(final.assignments)),
                    "non_empty": int(info.get("non_empty", 0)),
                    "inertia": info.get("inertia"),
                    "final_step": n_steps - 1,
                    "steps_run": ran,
                    "seconds": round(time.perf_counter() - t_level, 3),
                }
            )
    finally:
        if group is not None:
            group.close()

    n_points = summary["levels"][0]["n_items"]
    n_rows = sum(row_counts(files))
    summary.update(
        n_points=n_points,
        n_dropped_duplicates=n_rows - n_points,
        dim=int(previous.shape[1]),
        metric=kc.metric,
        seconds=round(time.perf_counter() - t_start, 3),
    )
    write_clusters_json(run, summary)
    return summary
