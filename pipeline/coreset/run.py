"""``strata coreset``: a k-center subset of a run's embeddings, written as a sampling-style manifest.

Output ``<run>/coreset/manifest.parquet`` follows the manifest contract (docs/DEVELOPING.md):
``id``, ``uri``, ``level_1`` ... ``level_L``, ``distance`` (to the level-1 centroid), ``multiplicity``
(1), carried columns, plus ``coreset_rank`` (pick order). Levels come from the run's finished
hierarchical k-means when present, else from the per-cluster partition (method per_cluster),
else a single cluster 0 with the distance to the mean. Rows in ``dedup/duplicates.parquet`` are
left out when ``drop_duplicates``. The covering radius goes to the returned dict and ``run.json``.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.artifacts import (
    CLUSTERS,
    CORESET,
    DUPLICATES,
    EMBEDDINGS,
    duplicate_ids,
    read_run_embeddings,
)
from pipeline.coreset.config import coreset_config
from pipeline.coreset.kcenter import k_center_greedy, stratified_k_center
from pipeline.coreset.percluster import per_cluster_k_center
from pipeline.io.tables import write_parquet_atomic
from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)


Selection = tuple[np.ndarray, float, np.ndarray | None]


def _exact(x: np.ndarray, k: int, c: dict) -> Selection:
    idx, radius = k_center_greedy(x, k, start=c["start"], seed=c["seed"], metric=c["metric"], device=c["device"])
    return idx, radius, None


def _stratified(x: np.ndarray, k: int, c: dict) -> Selection:
    idx, radius = stratified_k_center(
        x, k, start=c["start"], seed=c["seed"], metric=c["metric"], device=c["device"], **c["stratified"]
    )
    return idx, radius, None


def _per_cluster(x: np.ndarray, k: int, c: dict) -> Selection:
    from pipeline.kmeans.algorithm import kmeans

    pc_cfg = c["per_cluster"]
    n_clusters = min(len(x), pc_cfg["n_clusters"] or max(1, math.ceil(len(x) / pc_cfg["points_per_cluster"])))
    # kmeans normalises its input in place for the cosine metric: hand it a copy.
    _, assignments, distances = kmeans(
        np.array(x, dtype=np.float32),
        n_clusters,
        pc_cfg["n_iters"],
        init="kmeans++",
        metric=c["metric"],
        seed=c["seed"],
    )
    common = dict(metric=c["metric"], device=c["device"])
    if pc_cfg["objective"] != "coverage":
        idx, radius = per_cluster_objective(x, assignments, distances, k, pc_cfg, c["seed"], **common)
        return idx, radius, assignments
    idx, radius, _ = per_cluster_k_center(x, assignments, k, allocation=pc_cfg["allocation"], seed=c["seed"], **common)
    return idx, radius, assignments


# coreset.method -> how the k points are picked (``auto`` resolves to exact or stratified by size)
METHODS = {"exact": _exact, "stratified": _stratified, "per_cluster": _per_cluster}


def select_coreset(x: np.ndarray, k: int, cfg: dict) -> tuple[np.ndarray, float, np.ndarray | None, str]:
    """(indices, covering radius, level-1 assignments of the partition used or None, method run)."""
    c = coreset_config(cfg)
    method = c["method"]
    if method == "auto":
        method = "exact" if len(x) * k <= 2e9 else "stratified"
    if method not in METHODS:
        raise ValueError(f"coreset method must be {', '.join(METHODS)} or auto; got {method!r}")
    idx, radius, assignments = METHODS[method](x, k, c)
    return idx, radius, assignments, method


def per_cluster_objective(
    x: np.ndarray,
    assignments: np.ndarray,
    distances: np.ndarray,
    k: int,
    pc_cfg: dict,
    seed: int,
    *,
    metric: str,
    device: str,
) -> tuple[np.ndarray, float]:
    """``k`` points picked inside the clusters by a selection objective of ``pipeline.sampling.objectives``
    (``per_cluster.objective``), with the same per-cluster budgets as the per-cluster k-center;
    returns (indices, covering radius of the picks over all points)."""
    from pipeline.coreset.kcenter import min_distance_to_set
    from pipeline.coreset.percluster import cluster_budgets
    from pipeline.kmeans.hierarchical import sort_clusters
    from pipeline.sampling.objectives import OBJECTIVES

    objective = OBJECTIVES[pc_cfg["objective"]]
    n_clusters = int(assignments.max()) + 1
    offsets, items, _ = sort_clusters(assignments, distances, n_clusters)
    budgets = cluster_budgets(np.diff(offsets), k, allocation=pc_cfg["allocation"], seed=seed)
    rng = np.random.default_rng(seed)
    rank = objective.rank(x if objective.needs_embeddings else None, offsets, items, budgets, rng)
    cluster = np.repeat(np.arange(n_clusters), np.diff(offsets))
    idx = items[rank < budgets[cluster]]
    return idx.astype(np.int64), float(min_distance_to_set(x, idx, metric=metric, device=device).max())


def _levels_for(run: RunDir, ids: pa.Array, x: np.ndarray, assignments: np.ndarray | None) -> dict[str, pa.Array]:
    """Manifest level columns and ``distance`` for rows ``ids`` (with embeddings ``x``)."""
    if run.is_current(CLUSTERS):
        _, levels = load_levels(run)
        point_ids = load_point_ids(run)
        pos = pc.index_in(ids, value_set=point_ids.column("id")).to_numpy(zero_copy_only=False)
        if not np.isnan(pos.astype(float)).any():
            index = point_ids.column("index").to_numpy()[pos.astype(np.int64)]
            cols, cluster = {}, index
            for lv, level in enumerate(levels, start=1):
                cluster = level.assignments[cluster]
                cols[f"level_{lv}"] = pa.array(cluster, pa.int64())
            cols["distance"] = pa.array(levels[0].distances[index], pa.float32())
            return cols
        log.warning("some coreset ids are not in the run's clusters; using the coreset's own partition")
    if assignments is None:
        assignments = np.zeros(len(x), dtype=np.int64)
    centroids = np.zeros((int(assignments.max()) + 1, x.shape[1]), dtype=np.float64)
    np.add.at(centroids, assignments, x)
    centroids /= np.maximum(np.bincount(assignments, minlength=len(centroids)), 1)[:, None]
    return {
        "level_1": pa.array(assignments, pa.int64()),
        "distance": pa.array(np.linalg.norm(x - centroids[assignments], axis=1), pa.float32()),
    }


def run_coreset(run: RunDir, cfg: dict, *, force: bool = False) -> dict:
    """Select a k-center coreset of ``run``'s embeddings; write the manifest; return counts + radius.

    Reads the run's current dedup output (with ``drop_duplicates``) and clusters (for the level
    columns) when present; both are inputs of the step's fingerprint.
    """
    c = coreset_config(cfg)
    drop = bool(c["drop_duplicates"]) and run.is_current(DUPLICATES)
    inputs = [EMBEDDINGS, *([DUPLICATES] if drop else []), *([CLUSTERS] if run.is_current(CLUSTERS) else [])]
    with run.step("coreset", c, inputs, force=force) as step:
        if step.skipped:
            return {key: step.result[key] for key in ("input", "selected", "covering_radius", "method")}
        t0 = time.perf_counter()
        table, x = read_run_embeddings(run)
        if drop:
            keep = pc.invert(pc.is_in(table.column("id"), value_set=duplicate_ids(run))).to_numpy(zero_copy_only=False)
            table, x = table.filter(pa.array(keep)), x[keep]
        n = len(x)
        k = int(c["size"]) if c["size"] is not None else int(round(float(c["fraction"]) * n))
        if not 1 <= k <= n:
            raise ValueError(f"coreset size {k} must be in [1, {n}] (fraction={c['fraction']}, size={c['size']})")
        idx, radius, assignments, method = select_coreset(x, k, c)
        sel = table.take(pa.array(idx))
        cols = _levels_for(
            run, sel.column("id").combine_chunks(), x[idx], None if assignments is None else assignments[idx]
        )
        first = {"id": sel.column("id"), **({"uri": sel.column("uri")} if "uri" in sel.column_names else {})}
        manifest = pa.table(
            {
                **first,
                **cols,
                "multiplicity": pa.array(np.ones(k, dtype=np.int32)),
                "coreset_rank": pa.array(np.arange(k, dtype=np.int64)),
                **{name: sel.column(name) for name in sel.column_names if name not in first},
            }
        )
        write_parquet_atomic(manifest, c["output"] or run.path(CORESET))
        out = {"input": n, "selected": k, "covering_radius": float(radius), "method": method}
        step.result = {**out, "seconds": round(time.perf_counter() - t0, 2), "metric": c["metric"]}
        log.info("coreset: %s", out)
    return out
