"""Hierarchical k-means with resampling (Vo et al. 2024), level by level, step by step.

Level 1 clusters the points; level l clusters the centroids of level l-1. Within a level:

- step 0: k-means on all points (or, with ``n_splits > 1``, split mode: a coarse k-means into
  ``ceil(k / n_splits)`` clusters, then every coarse cluster is split by its own local k-means,
  as independent parallel tasks);
- step s >= 1 (resampling): take ``sample_size`` points per cluster of step s-1 (``closest`` to
  the centroid, or ``random``), run k-means on that sample only, reassign all points. The
  k-means on the sample starts from step s-1's centroids (``resample_init: warm``; Lloyd then
  stops after a few iterations on ``tol``) or from a new initialisation (``fresh``, as Meta's
  reference code). Taking the same number of points from every cluster moves centroids out of dense
  regions, so they spread evenly over the support of the data.

After every step all points are reassigned and each cluster is sorted by distance to its
centroid; :func:`sort_clusters` gives the CSR form (``offsets`` (k+1,), ``sorted_clusters``
flat member indices, ``sorted_distances``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.kmeans.algorithm import LocalGroup, ProgressFn, _no_progress, fit_group, kmeans
from pipeline.kmeans.config import INITS, PER_LEVEL, STRATEGIES, KMeansConfig, LevelConfig  # noqa: F401 - re-exported
from pipeline.kmeans.levels import LevelResult, sort_clusters  # noqa: F401 - re-exported
from pipeline.kmeans.shard import Shard

log = logging.getLogger(__name__)


def select_resampling_sample(group, k: int, per_cluster: int, strategy: str, seed: int) -> int:
    """Activate ``per_cluster`` points of every cluster of the last full assignment.

    Every shard proposes its local best ``per_cluster`` (key, index) per cluster; the driver
    keeps the global best and sends back only per-cluster thresholds (k keys, k indices).
    Returns the sample size.
    """
    parts = group.call("sample_candidates", per_cluster, strategy, seed)
    cl = np.concatenate([p[0] for p in parts])
    key = np.concatenate([p[1] for p in parts])
    idx = np.concatenate([p[2] for p in parts])
    order = np.lexsort((idx, key, cl))
    cl, key, idx = cl[order], key[order], idx[order]
    rank = np.arange(len(cl)) - np.searchsorted(cl, cl, side="left")
    last = np.flatnonzero(rank == per_cluster - 1)
    thr_key = np.full(k, np.inf)
    thr_idx = np.full(k, np.iinfo(np.int64).max, dtype=np.int64)
    thr_key[cl[last]] = key[last]
    thr_idx[cl[last]] = idx[last]
    return int(sum(group.call("select_sample", thr_key, thr_idx, strategy, seed)))


def allocate_splits(sizes: np.ndarray, k: int, n_splits: int) -> np.ndarray:
    """Sub-clusters per coarse cluster: ``min(n_splits, size)``, topped up to ``k`` in total.

    The deficit goes, one at a time, to the cluster with the most points per sub-cluster.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.sum() < k:
        raise ValueError(f"split mode: {sizes.sum()} points cannot form {k} clusters")
    splits = np.minimum(n_splits, sizes)
    for _ in range(int(k - splits.sum())):
        load = np.where(sizes > splits, sizes / np.maximum(splits, 1e-9), -1.0)
        splits[int(np.argmax(load))] += 1
    return splits


def split_members_kmeans(
    members: Sequence[tuple[np.ndarray, np.ndarray]],
    clusters: np.ndarray,
    splits: np.ndarray,
    seeds: np.ndarray,
    n_iters: int,
    init: str,
    metric: str,
) -> np.ndarray:
    """Local k-means of each coarse cluster in ``clusters`` into ``splits[i]`` centroids.

    ``members``: per shard (coarse assignments, vectors) of the rows in those clusters.
    Returns the concatenated sub-centroids, in the order of ``clusters``.
    """
    assign = np.concatenate([m[0] for m in members])
    vecs = np.concatenate([m[1] for m in members])
    out = []
    for c, s, seed in zip(clusters, splits, seeds):
        if s == 0:
            continue
        out.append(kmeans(vecs[assign == c], int(s), n_iters, init=init, metric=metric, seed=int(seed))[0])
    return np.concatenate(out) if out else np.zeros((0, vecs.shape[1]), dtype=np.float32)


def _split_task(member_refs: list, *args: Any) -> np.ndarray:
    import ray

    return split_members_kmeans(ray.get(member_refs), *args)


def split_kmeans(
    group, lc: LevelConfig, cfg: KMeansConfig, rng: np.random.Generator, progress: ProgressFn = _no_progress
) -> np.ndarray:
    """Split mode: coarse k-means into ``ceil(k / n_splits)``, then local k-means per coarse cluster.

    On a :class:`~pipeline.kmeans.algorithm.RayGroup` the local k-means run as parallel Ray tasks
    that fetch their members straight from the shard actors (the driver never holds them).
    """
    k = lc.n_clusters
    coarse_k = math.ceil(k / lc.n_splits)
    coarse, _ = fit_group(group, coarse_k, lc.n_iters, **_fit_kwargs(cfg, rng, progress))
    sizes = np.sum([r[0] for r in group.call("assign_all", coarse)], axis=0)
    splits = allocate_splits(sizes, k, lc.n_splits)
    seeds = rng.integers(2**31, size=coarse_k)
    batches = np.array_split(np.arange(coarse_k), max(1, min(cfg.split_tasks, coarse_k)))
    args = lambda b: (b, splits[b], seeds[b], lc.n_iters, cfg.init, cfg.metric)  # noqa: E731
    if hasattr(group, "actors"):  # shards on Ray actors (their engine): the local k-means as Ray tasks
        from pipeline.engine import RAY

        tasks = (([a.members.remote(b) for a in group.actors], *args(b)) for b in batches)
        try:
            parts = RAY.run_tasks(_split_task, tasks, num_cpus=cfg.cpus_per_actor)
        except Exception as exc:
            from pipeline.kmeans.algorithm import ShardLost, is_actor_loss

            if is_actor_loss(exc):
                raise ShardLost(f"a k-means shard actor died during split mode: {exc}") from exc
            raise
    else:
        parts = [split_members_kmeans(group.call("members", b), *args(b)) for b in batches]
    return np.concatenate(parts).astype(np.float32)


StepCallback = Callable[[int, np.ndarray, np.ndarray, float], None]


def _fit_kwargs(cfg: KMeansConfig, rng: np.random.Generator, progress: ProgressFn) -> dict[str, Any]:
    return dict(
        init=cfg.init,
        metric=cfg.metric,
        rng=rng,
        n_local_trials=cfg.n_local_trials,
        init_sample_flops=cfg.init_sample_flops,
        progress=progress,
        tol=cfg.tol,
    )


def fit_level(
    group,
    lc: LevelConfig,
    cfg: KMeansConfig,
    level: int,
    *,
    start_step: int = 0,
    centroids: np.ndarray | None = None,
    on_step: StepCallback | None = None,
    progress: Callable[..., None] | None = None,
) -> np.ndarray:
    """Run steps ``start_step .. n_resampling_steps`` of one level; returns the final centroids.

    After each step every point is assigned (shard state) and ``on_step(step, centroids,
    counts, inertia)`` is called, so the caller can persist the step. Inside a step,
    ``progress(step, phase, done, total, **metrics)`` reports the initialisation (per centre) and
    every Lloyd iteration. To resume, pass the
    centroids of step ``start_step - 1`` after calling ``assign_all`` with them on the group.
    """
    k = lc.n_clusters
    for step in range(start_step, lc.n_resampling_steps + 1):
        inertias: list[float] = []
        rng = np.random.default_rng([cfg.seed, level, step])
        report = _no_progress if progress is None else functools.partial(progress, step)
        if step == 0:
            group.call("set_active", None)
            n = int(sum(group.call("n_active")))
            if k > n:
                raise ValueError(f"level {level}: n_clusters={k} exceeds the {n} items to cluster")
            if lc.n_splits > 1:
                centroids = split_kmeans(group, lc, cfg, rng, report)
            else:
                centroids, inertias = fit_group(group, k, lc.n_iters, **_fit_kwargs(cfg, rng, report))
        else:
            key_seed = int(rng.integers(2**62))
            n_sample = select_resampling_sample(group, k, lc.sample_size, lc.resampling_strategy, key_seed)
            if n_sample < k:  # only when many clusters are empty; keep the previous centroids
                log.warning("level %d step %d: sample of %d points < k=%d; step skipped", level, step, n_sample, k)
            else:
                kwargs = _fit_kwargs(cfg, rng, report)
                if cfg.resample_init == "warm":
                    kwargs["init"] = centroids
                centroids, inertias = fit_group(group, k, lc.n_iters, **kwargs)
            group.call("set_active", None)
        moved = not (step == 0 and lc.n_splits > 1)  # centroids = the last Lloyd fit's, updated: a hint
        stats = group.call("assign_all", centroids, moved)
        counts = np.sum([s[0] for s in stats], axis=0)
        inertia = float(sum(s[1] for s in stats))
        log.info(
            "level %d step %d: k=%d non-empty=%d inertia=%.4g lloyd_iterations=%d",
            *(level, step, k, int((counts > 0).sum()), inertia, len(inertias)),
        )
        if on_step is not None:
            on_step(step, centroids, counts, inertia)
    return centroids


def gather_level(group, centroids: np.ndarray) -> LevelResult:
    """Collect the current assignment of every item from the shards (once per finished step)."""
    parts = group.call("assignments")
    index = np.concatenate([p[0] for p in parts])
    assign = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise RuntimeError("shards do not cover indices 0..N-1 exactly once")
    return LevelResult.from_assignments(centroids, assign[order], dist[order])


def hierarchical_kmeans(x: np.ndarray, cfg: KMeansConfig | dict, *, n_shards: int = 1) -> list[LevelResult]:
    """In-process hierarchical k-means with resampling on (N, D) ``x``; one result per level."""
    cfg = cfg if isinstance(cfg, KMeansConfig) else KMeansConfig.from_dict(cfg)
    results: list[LevelResult] = []
    data = np.asarray(x, dtype=np.float32)
    for level, lc in enumerate(cfg.levels, start=1):
        bounds = np.linspace(0, len(data), n_shards + 1 if level == 1 else 2).astype(int)
        group = LocalGroup(
            [
                Shard(
                    data[a:b],
                    metric=cfg.metric,
                    offset=a,
                    chunk_mb=cfg.chunk_mb,
                    use_gpu=False,  # the in-process API: CPU, in memory
                    out_of_core=False,
                    centroid_index=cfg.centroid_index,
                )
                for a, b in zip(bounds[:-1], bounds[1:])
            ]
        )
        centroids = fit_level(group, lc, cfg, level)
        results.append(gather_level(group, centroids))
        data = centroids
    return results
