"""Per-cluster k-center: greedy k-center inside each cluster with a balanced per-cluster budget.

Budgets come from water-filling (``pipeline.sampling.water_filling``):
``b_j = min(x*, n_j)`` (+1 for a random remainder), ``sum_j b_j = k``, so small clusters are
taken whole and large ones get equal shares. Each cluster's k-center runs independently (as
parallel Ray tasks when Ray is initialised); the union's covering radius is at most
``max_j r_j`` because every point is covered by a center of its own cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.coreset.kcenter import Metric, k_center_greedy
from pipeline.engine import ray_running, select_engine
from pipeline.kmeans.hierarchical import sort_clusters
from pipeline.sampling.water_filling import water_filling


def cluster_budgets(sizes: np.ndarray, k: int, *, allocation: str, seed: int) -> np.ndarray:
    """(C,) int64 budgets summing to ``k``: "balanced" (water-filling) or "proportional" (to sizes)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if not 0 <= k <= sizes.sum():
        raise ValueError(f"k={k} must be in [0, {sizes.sum()}]")
    rng = np.random.default_rng(seed)
    if allocation == "balanced":
        return water_filling(sizes, k, rng)
    if allocation == "proportional":
        # Largest remainder on k * n_j / N, capped by n_j (never binding: k <= N).
        quota = k * sizes / max(sizes.sum(), 1)
        base = np.floor(quota).astype(np.int64)
        extra = np.argsort(-(quota - base), kind="stable")[: k - base.sum()]
        base[extra] += 1
        return base
    raise ValueError(f"allocation must be 'balanced' or 'proportional', got {allocation!r}")


def _cluster_task(x: np.ndarray, members: np.ndarray, budget: int, metric: Metric, device: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    if budget == 0:
        return np.empty(0, dtype=np.int64), float("nan")
    if budget >= len(members):
        return members.astype(np.int64), 0.0
    picks, radius = k_center_greedy(x[members], budget, metric=metric, device=device)
    return members[picks].astype(np.int64), radius


def per_cluster_k_center(
    x: np.ndarray,
    assignments: np.ndarray,
    k: int,
    *,
    budgets: Sequence[int] | np.ndarray | None = None,
    allocation: str,
    metric: Metric,
    device: str,
    seed: int,
    use_ray: bool | None = None,
    cpus_per_task: float = 0.5,
    threads: int = 1,
) -> tuple[np.ndarray, float, np.ndarray]:
    """k-center inside every cluster of ``assignments`` with per-cluster budgets.

    Args:
        x: (N, D) points; assignments: (N,) int cluster ids in [0, C).
        k: total budget (ignored when ``budgets`` is given).
        budgets: (C,) per-cluster budgets; default ``cluster_budgets(sizes, k, allocation=, seed=)``.
        use_ray: run clusters as Ray tasks; default: when Ray is initialised.

    Returns:
        (indices (k,) int64 grouped by cluster, covering-radius upper bound max_j r_j, (C,) r_j).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    assignments = np.asarray(assignments, dtype=np.int64)
    if assignments.shape != (len(x),) or (assignments < 0).any():
        raise ValueError("assignments must be (N,) non-negative cluster ids")
    n_clusters = int(assignments.max()) + 1 if len(assignments) else 0
    offsets, members, _ = sort_clusters(assignments, np.zeros(len(x), dtype=np.float32), n_clusters)
    sizes = np.diff(offsets)
    budgets = cluster_budgets(sizes, k, allocation=allocation, seed=seed) if budgets is None else np.asarray(budgets)
    if budgets.shape != sizes.shape or (budgets > sizes).any() or (budgets < 0).any():
        raise ValueError("budgets must be (C,) with 0 <= b_j <= cluster size")
    groups = [members[offsets[j] : offsets[j + 1]] for j in range(n_clusters)]
    if use_ray is None:
        use_ray = ray_running()
    engine = select_engine("ray" if use_ray else "local", small=None, what="coreset")
    tasks = ((g, int(b), metric, device, threads) for g, b in zip(groups, budgets))
    results = engine.run_tasks(_cluster_task, tasks, (x,), num_cpus=cpus_per_task)
    picks = np.concatenate([r[0] for r in results]) if results else np.empty(0, dtype=np.int64)
    radii = np.array([r[1] for r in results], dtype=np.float64)
    # A cluster with budget 0 is uncovered by its own centers: report +inf rather than hide it.
    radii = np.where((budgets == 0) & (sizes > 0), np.inf, np.nan_to_num(radii, nan=0.0))
    return picks, float(radii.max()) if len(radii) else 0.0, radii
