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
settings up to that level and the input files), and ``cluster`` follows ``clusters.json``. A
rerun loads the last finished step of a level, reassigns the points to its centroids (same
code, same result) and continues with the next step.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.tables import list_parquet_files
from pipeline.kmeans.algorithm import LocalGroup, RayGroup, ShardLost
from pipeline.kmeans.hierarchical import KMeansConfig, LevelResult, fit_level, gather_level
from pipeline.kmeans.shard import Shard, ShardSource
from pipeline.progress import Progress
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)

ARRAYS = ("centroids", "assignments", "distances", "offsets", "sorted_clusters", "sorted_distances")


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
        remote = ray.remote(num_cpus=cfg.cpus_per_actor, num_gpus=1 if cfg.use_gpu else 0, max_restarts=cfg.max_actor_restarts, max_task_retries=0)(Shard)
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


def save_step(run: RunDir, level: int, step: int, result: LevelResult) -> None:
    """Write one step's arrays atomically (staging folder renamed on success)."""
    with run.staging("clusters", f"level_{level}", f"step_{step}") as tmp:
        fs, root = fsspec.core.url_to_fs(tmp)
        fs.makedirs(root, exist_ok=True)
        for name in ARRAYS:
            with fs.open(f"{root}/{name}.npy", "wb") as fh:
                np.save(fh, getattr(result, name))


def load_step(clusters_dir: str, level: int, step: int) -> LevelResult:
    fs, root = fsspec.core.url_to_fs(clusters_dir)
    arrays = {}
    for name in ARRAYS:
        with fs.open(f"{root}/level_{level}/step_{step}/{name}.npy", "rb") as fh:
            arrays[name] = np.load(fh)
    return LevelResult(**arrays)


def load_levels(clusters_dir: str) -> tuple[dict, list[LevelResult]]:
    """(``clusters.json`` content, final :class:`LevelResult` of every level) of a finished run."""
    with fsspec.open(f"{clusters_dir}/clusters.json", "r") as fh:
        meta = json.load(fh)
    return meta, [load_step(clusters_dir, lv["level"], lv["final_step"]) for lv in meta["levels"]]


def load_point_ids(clusters_dir: str) -> pa.Table:
    """``index``, ``id`` of every level-1 item, sorted by index."""
    tables = []
    for f in list_parquet_files(f"{clusters_dir}/points"):
        with fsspec.open(f, "rb") as fh:
            tables.append(pq.read_table(fh))
    table = pa.concat_tables(tables)
    return table.sort_by("index")


def _input_signature(files: list[str], dup: str | None) -> list:
    sig = []
    for f in [*files, *([dup] if dup else [])]:
        fs, p = fsspec.core.url_to_fs(f)
        info = fs.info(p)
        sig.append([f, info.get("size"), info.get("mtime") or info.get("LastModified")])
    return sig


def run_cluster(run: RunDir, cfg: dict, *, force: bool = False, seed: int | None = None) -> dict:
    """Hierarchical k-means with resampling of ``run.path("embeddings")`` into ``run.path("clusters")``.

    Rows whose id is in ``dedup/duplicates.parquet`` (when present) are left out. Level 1 runs
    on Ray actors holding contiguous shards read by the actors themselves; upper levels cluster
    the (small) centroid sets in-process. Returns counts and timings for ``run.json``.
    """
    kc = KMeansConfig.from_dict(dict(cfg), seed=seed)
    t_start = time.perf_counter()
    files = list_parquet_files(run.path("embeddings"))
    dup = run.path("dedup", "duplicates.parquet") if run.exists("dedup", "duplicates.parquet") else None
    signature = _input_signature(files, dup)
    fps = [{**kc.algorithm_fingerprint(lv), "input": signature} for lv in range(1, len(kc.levels) + 1)]
    steps = [(lv, s) for lv, lc in enumerate(kc.levels, start=1) for s in range(lc.n_resampling_steps + 1)]
    if force:
        run.clear("cluster", *(_step_name(lv, s) for lv, s in steps))
    if run.is_done("cluster", fps[-1]):
        log.info("clusters already computed; skipping (force=true recomputes)")
        return {**run.marker("cluster").get("summary", {}), "skipped": True}

    clusters_dir = run.path("clusters")
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
                    fs, root = fsspec.core.url_to_fs(f"{clusters_dir}/points")
                    if fs.exists(root):
                        fs.rm(root, recursive=True)
                    group.call_each("write_ids", {i: (f"{clusters_dir}/points/part-{i:05d}.parquet",) for i in range(len(group))})
                else:
                    group = LocalGroup([Shard(previous, metric=kc.metric, chunk_mb=kc.chunk_mb)])
                bar = Progress(f"kmeans/level_{level}", total=n_steps, run=run, unit="step")
                if done:
                    bar.update(done, resumed_steps=done)

                def on_step(step: int, centroids: np.ndarray, counts: np.ndarray, inertia: float) -> None:
                    save_step(run, level, step, gather_level(group, centroids))
                    run.mark_done(_step_name(level, step), {**fp, "step": step}, inertia=inertia,
                                  non_empty=int((counts > 0).sum()))
                    bar.update(inertia=round(float(inertia), 4), non_empty=int((counts > 0).sum()))

                with bar:
                    for attempt in range(kc.max_step_retries + 1):
                        start_centroids = None
                        if done > 0:  # resume: every point assigned to the last finished step's centroids
                            start_centroids = load_step(clusters_dir, level, done - 1).centroids
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
                            log.warning("level %d: %s; recomputing from step %d (retry %d of %d)", level, exc, done, attempt + 1, kc.max_step_retries)
                            summary["recovered_shard_failures"] += 1
                group.close()
                group = None
            final = load_step(clusters_dir, level, n_steps - 1)
            previous = final.centroids
            info = run.marker(_step_name(level, n_steps - 1))
            summary["levels"].append({
                "level": level,
                "n_clusters": lc.n_clusters,
                "n_items": int(len(final.assignments)),
                "non_empty": int(info.get("non_empty", 0)),
                "inertia": info.get("inertia"),
                "final_step": n_steps - 1,
                "steps_run": ran,
                "seconds": round(time.perf_counter() - t_level, 3),
            })
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
    run.write_json("clusters/clusters.json", summary)
    run.mark_done("cluster", fps[-1], summary=summary)
    return summary
