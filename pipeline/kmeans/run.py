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

Every shard writes its own part of a finished step (its rows' assignments and distances, and its
members of every cluster sorted by distance) under ``_tmp/``; the driver sums the k-sized counts
and streams the parts into the files above (a cluster-batched merge bounded by ``chunk_mb``), so
no N-length array passes through the driver. Out of core (``kmeans.memory_budget_mb``,
``kmeans.out_of_core``) the shards stream their rows from a local spill file.

A marker ``cluster/level_<l>/step_<s>`` follows each step's outputs (fingerprint: the algorithm
settings up to that level and the step's inputs), and ``cluster`` follows ``clusters.json``. A
rerun loads the last finished step of a level, reassigns the points to its centroids (same
code, same result) and continues with the next step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import fsspec
import numpy as np

from pipeline.artifacts import (
    DUPLICATES,
    EMBEDDINGS,
    clear_cluster_points,
    cluster_points_part,
    cluster_step_parts,
    duplicate_ids,
    embedding_files,
)
from pipeline.engine import Engine, ray_running
from pipeline.kmeans import plan as kmeans_plan
from pipeline.kmeans.algorithm import LocalGroup, RayGroup, ShardLost
from pipeline.kmeans.config import AUTO, auto_n_clusters
from pipeline.kmeans.hierarchical import KMeansConfig, fit_level
from pipeline.kmeans.levels import load_step_centroids, write_clusters_json, write_step
from pipeline.kmeans.plan import level1_engine
from pipeline.kmeans.shard import (
    ROW_STATE_BYTES,
    Shard,
    ShardSource,
    npy_header,
    resolve_out_of_core,
    write_npy_blocks,
)
from pipeline.kmeans.sizes import MIN_POINTS_PER_CLUSTER, embedding_dim, row_counts
from pipeline.progress import Progress
from pipeline.rundir import RunDir, Step

log = logging.getLogger(__name__)


def _step_name(level: int, step: int) -> str:
    return f"cluster/level_{level}/step_{step}"


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


def shard_kwargs(cfg: KMeansConfig, n_rows: int, dim: int) -> dict[str, Any]:
    """Constructor settings of a shard of ``n_rows`` rows of width ``dim`` (in memory or out of core)."""
    return dict(
        metric=cfg.metric,
        chunk_mb=cfg.chunk_mb,
        threads=cfg.threads_per_actor,
        use_gpu=cfg.use_gpu,
        out_of_core=resolve_out_of_core(cfg.out_of_core, n_rows, dim, cfg.memory_budget_mb),
        memory_budget_mb=cfg.memory_budget_mb,
        spill_dir=cfg.spill_dir,
        centroid_index=cfg.centroid_index,
    )


def _source_dim(sources: list[ShardSource]) -> int:
    piece = next((p for s in sources for p in s.pieces), None)
    if piece is None:
        return 0
    if sources[0].kind == "npy":
        return int(np.load(piece[0], mmap_mode="r").shape[1])
    return embedding_dim(piece[0])


GROUPS = {"local": LocalGroup, "ray": RayGroup}  # engine -> how its shards are called


def start_shards(sources: list[ShardSource], cfg: KMeansConfig, engine: Engine | None = None):
    """One shard per source on ``engine`` (default: ``cfg.in_process``'s, :func:`level1_engine`):
    Ray actors or objects in this process; offsets set."""
    engine = engine or level1_engine(cfg, 0, 0)
    dim = _source_dim(sources)
    kwargs = [{"source": s, **shard_kwargs(cfg, sum(b - a for _, a, b in s.pieces), dim)} for s in sources]
    # A restarted actor re-runs the constructor, which reads its rows again from ``source``;
    # calls in flight when it died fail (max_task_retries=0) and the step is recomputed.
    shards = engine.start_actors(
        Shard,
        kwargs,
        num_cpus=cfg.cpus_per_actor,
        num_gpus=1 if cfg.use_gpu else 0,
        max_restarts=cfg.max_actor_restarts,
        max_task_retries=0,
    )
    group = GROUPS[engine.name](shards)
    return group, set_offsets(group)


class _NpyPart:
    """Sequential reader of a 1-D ``.npy`` part written by a shard (fsspec URI)."""

    def __init__(self, uri: str):
        self.fh = fsspec.open(uri, "rb").open()
        major, _ = np.lib.format.read_magic(self.fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, self.dtype = read_header(self.fh)
        self.n = int(shape[0])

    def read(self, count: int) -> np.ndarray:
        return np.frombuffer(self.fh.read(int(count) * self.dtype.itemsize), dtype=self.dtype)

    def close(self) -> None:
        self.fh.close()


def save_step_from_shards(
    run: RunDir, group: Any, level: int, step: int, centroids: np.ndarray, merge_mb: float
) -> int:
    """Write a finished step from the shards' parts; returns the number of items.

    Every shard writes its part (:meth:`Shard.write_step_part`) and returns its per-cluster counts
    ``n_s[c]``; the global offsets are ``cumsum_c sum_s n_s[c]``. ``assignments`` and ``distances``
    are the parts concatenated in shard order (shards hold contiguous index ranges);
    ``sorted_clusters`` / ``sorted_distances`` are merged a batch of clusters at a time (at most
    ``merge_mb`` worth of rows, or one cluster): each shard's slice of the batch is read in order
    and sorted by (cluster, distance, index), which is exactly :func:`sort_clusters`' order.
    """
    k = len(centroids)
    parts = cluster_step_parts(run, level, step)
    fs, root = fsspec.core.url_to_fs(parts)
    fs.makedirs(root, exist_ok=True)
    prefixes = [f"{parts}/{i:05d}" for i in range(len(group))]
    got = group.call_each("write_step_part", {i: (p, k) for i, p in enumerate(prefixes)})
    counts = np.stack([np.asarray(got[i], dtype=np.int64) for i in range(len(group))])
    local = np.zeros((len(group), k + 1), dtype=np.int64)
    np.cumsum(counts, axis=1, out=local[:, 1:])
    offsets = np.concatenate([[0], np.cumsum(counts.sum(axis=0))]).astype(np.int64)
    n, rows = int(offsets[-1]), max(1, int(merge_mb * 2**20) // 48)

    def write(files: dict) -> None:
        np.save(files["centroids"], np.asarray(centroids, dtype=np.float32))
        np.save(files["offsets"], offsets)
        for name in ("assignments", "distances"):
            readers = [_NpyPart(f"{p}-{name}.npy") for p in prefixes]
            write_npy_blocks(
                files[name],
                readers[0].dtype if readers else np.int64,
                n,
                (r.read(min(rows, r.n - a)) for r in readers for a in range(0, r.n, rows)),
            )
            for r in readers:
                r.close()
        members = [_NpyPart(f"{p}-sorted_clusters.npy") for p in prefixes]
        member_dist = [_NpyPart(f"{p}-sorted_distances.npy") for p in prefixes]
        files["sorted_clusters"].write(npy_header((n,), np.int64))
        files["sorted_distances"].write(npy_header((n,), np.float32))
        c0 = 0
        while c0 < k:
            c1 = min(k, max(c0 + 1, int(np.searchsorted(offsets, offsets[c0] + rows, side="right")) - 1))
            idx = np.concatenate([m.read(local[s, c1] - local[s, c0]) for s, m in enumerate(members)])
            dist = np.concatenate([m.read(local[s, c1] - local[s, c0]) for s, m in enumerate(member_dist)])
            cl = np.concatenate([np.repeat(np.arange(c0, c1), counts[s, c0:c1]) for s in range(len(group))])
            order = np.lexsort((idx, dist, cl))
            files["sorted_clusters"].write(idx[order].tobytes())
            files["sorted_distances"].write(dist[order].tobytes())
            c0 = c1
        for r in members + member_dist:
            r.close()

    write_step(run, level, step, write)
    fs.rm(root, recursive=True)
    return n


def set_offsets(group) -> int:
    """Give every shard the global index of its first row; returns the total row count."""
    sizes = np.asarray(group.call("size"), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group.call_each("set_offset", {i: (int(o),) for i, o in enumerate(offsets)})
    return int(sizes.sum())


def _n_actors(cfg: KMeansConfig) -> int:
    if cfg.n_actors:
        return int(cfg.n_actors)
    if not ray_running():  # the shards a local Ray would get (one per CPU): same layout, same numbers
        import os

        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    import ray

    return max(1, int(ray.cluster_resources().get("GPU" if cfg.use_gpu else "CPU", 1)))


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
    dim = embedding_dim(files[0]) if files else 0
    engine = level1_engine(kc, n_points, dim)
    kc = dataclasses.replace(kc, in_process=engine.name == "local")
    engine.start()
    log.info("kmeans level 1: %s", "in this process" if kc.in_process else "on Ray actors")
    warnings = check_sizes(kc, n_points, dim, _n_actors(kc)) if files and n_points else []
    warnings += log_plan(kc, n_points, dim)
    inputs = [EMBEDDINGS, *([DUPLICATES] if drop_duplicates else [])]
    with run.step("cluster", kc.algorithm_fingerprint(len(kc.levels)), inputs, force=force) as step:
        if step.skipped:
            return {**step.result, "skipped": True}
        auto = cfg.get("n_clusters") == AUTO
        step.result = {
            **_fit_levels(run, kc, step, drop_duplicates, engine),
            "n_clusters_auto": auto,
            "warnings": warnings,
        }
    return step.result


def log_plan(kc: KMeansConfig, n_points: int, dim: int) -> list[str]:
    """Log the capacity plan before level 1 (:func:`pipeline.kmeans.plan.plan_before_level_1`) and
    warn in one line when it predicts more than an hour; returns that warning, if any."""
    got = kmeans_plan.plan_before_level_1(kc, n_points, dim, kmeans_plan.DEFAULT_CALIBRATION)  # read when called
    if got is None:
        return []
    table, warning = got
    log.info("%s", table)
    if warning:
        log.warning("%s", warning)
    return [warning] if warning else []


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
    rows = n_points / max(n_actors, 1)
    need = (rows + k1) * dim * 4 + kc.chunk_mb * 2**20
    if resolve_out_of_core(kc.out_of_core, int(rows), dim, kc.memory_budget_mb):  # rows streamed from disk
        need = rows * ROW_STATE_BYTES + k1 * dim * 4 + min(kc.chunk_mb * 2**20, kc.memory_budget_mb or float("inf"))
    share = _memory_bytes() / max(n_actors, 1)
    if need > share:
        warnings.append(
            f"kmeans level 1: one of {n_actors} actors needs ~{need / 2**30:.1f} GiB (rows + {k1} centroids of "
            f"{dim} floats) but has ~{share / 2**30:.1f} GiB: use more actors/machines, fewer clusters, or "
            f"split mode (kmeans.n_splits), or out of core (kmeans.memory_budget_mb)"
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


class StepProgress:
    """Progress inside a step: ``kmeans/level_<l>/step_<s>/init`` (centres seeded) and
    ``.../lloyd`` (iterations), each with its rate and ETA in ``progress.log`` from the first unit.

    Called as ``progress(step, phase, done, total, **metrics)`` by :func:`fit_level`.
    """

    def __init__(self, run: RunDir, level: int, log_interval: float = 5.0):
        self.run, self.level, self.log_interval = run, level, log_interval
        self.bar: Progress | None = None
        self.key: tuple[int, str] | None = None

    def __call__(self, step: int, phase: str, done: int, total: int, **metrics: Any) -> None:
        if (step, phase) != self.key or self.bar is None or done < self.bar.done:
            self.close()
            unit = "centre" if phase == "init" else "iter"
            name = f"kmeans/level_{self.level}/step_{step}/{phase}"
            self.bar = Progress(name, total=total, run=self.run, unit=unit, log_interval=self.log_interval)
            self.key = (step, phase)
        self.bar.update(done - self.bar.done, **{k: round(float(v), 4) for k, v in metrics.items()})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None


def _steps_done(run: RunDir, level: int, n_steps: int, fp: dict) -> int:
    """Leading resampling steps of ``level`` whose sub-step markers match ``fp``."""
    done = 0
    while done < n_steps and run.is_done(_step_name(level, done), {**fp, "step": done}):
        done += 1
    return done


def _level_group(
    run: RunDir, kc: KMeansConfig, level: int, files: list[str], dup: str | None, previous: Any, engine: Engine
):
    """The shards of ``level``: level 1 from the embeddings on ``engine`` (each writes its part of
    ``clusters/points``), upper levels the previous level's centroids in this process."""
    if level > 1:
        return LocalGroup([Shard(previous, **shard_kwargs(kc, *previous.shape))])
    group, _ = start_shards(plan_shards(files, _n_actors(kc), dup), kc, engine)
    try:
        clear_cluster_points(run)
        group.call_each("write_ids", {i: (cluster_points_part(run, i),) for i in range(len(group))})
    except BaseException:
        group.close()
        raise
    return group


def _fit_level_steps(
    run: RunDir, kc: KMeansConfig, lc: Any, level: int, group: Any, fp: dict, done: int, n_steps: int
) -> int:
    """Resampling steps ``done .. n_steps - 1`` of ``level`` on ``group``, each saved and marked as it
    finishes; a lost shard recomputes from the last finished step (``max_step_retries`` times).
    Returns the number of recovered shard failures."""
    bar = Progress(f"kmeans/level_{level}", total=n_steps, run=run, unit="step")
    inner = StepProgress(run, level)
    if done:
        bar.update(done, resumed_steps=done)

    def on_step(step: int, centroids: np.ndarray, counts: np.ndarray, inertia: float) -> None:
        inner.close()
        save_step_from_shards(run, group, level, step, centroids, kc.chunk_mb)
        run.mark_done(_step_name(level, step), {**fp, "step": step}, inertia=inertia, non_empty=int((counts > 0).sum()))
        bar.update(inertia=round(float(inertia), 4), non_empty=int((counts > 0).sum()))

    recovered = 0
    with bar:
        for attempt in range(kc.max_step_retries + 1):
            start_centroids = None
            if done > 0:  # resume: every point assigned to the last finished step's centroids
                start_centroids = load_step_centroids(run, level, done - 1)[0]
            try:
                if attempt:  # restarted shards reloaded their rows; restore the rest of their state
                    group.wait_alive()
                    set_offsets(group)
                if start_centroids is not None:
                    group.call("assign_all", start_centroids)
                fit_level(
                    group, lc, kc, level, start_step=done, centroids=start_centroids, on_step=on_step, progress=inner
                )
                break
            except ShardLost as exc:
                if attempt == kc.max_step_retries:
                    raise
                done = _steps_done(run, level, n_steps, fp)
                log.warning(
                    "level %d: %s; recomputing from step %d (retry %d of %d)",
                    level,
                    exc,
                    done,
                    attempt + 1,
                    kc.max_step_retries,
                )
                recovered += 1
            finally:
                inner.close()
    return recovered


def _fit_levels(run: RunDir, kc: KMeansConfig, step: Step, drop_duplicates: bool, engine: Engine) -> dict[str, Any]:
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
    previous: np.ndarray | None = None
    for level, lc in enumerate(kc.levels, start=1):
        t_level = time.perf_counter()
        fp = fps[level - 1]
        n_steps = lc.n_resampling_steps + 1
        done = _steps_done(run, level, n_steps, fp)
        ran, spilled = n_steps - done, 0
        if done < n_steps:
            group = _level_group(run, kc, level, files, dup, previous, engine)
            try:
                spilled = int(sum(group.call("spilled")))
                summary["recovered_shard_failures"] += _fit_level_steps(run, kc, lc, level, group, fp, done, n_steps)
            finally:
                group.close()
        previous, n_items = load_step_centroids(run, level, n_steps - 1)
        info = run.marker(_step_name(level, n_steps - 1))
        summary["levels"].append(
            {
                "level": level,
                "n_clusters": lc.n_clusters,
                "n_items": n_items,
                "out_of_core_shards": spilled,
                "non_empty": int(info.get("non_empty", 0)),
                "inertia": info.get("inertia"),
                "final_step": n_steps - 1,
                "steps_run": ran,
                "seconds": round(time.perf_counter() - t_level, 3),
            }
        )

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
