"""Diverse data sampler: k-center greedy coresets (exact, stratified, per-cluster).

Public API:

- :func:`k_center_greedy`, :func:`stratified_k_center`, :func:`covering_radius`,
  :func:`min_distance_to_set` (kcenter.py): pure functions on (N, D) arrays;
- :func:`per_cluster_k_center`, :func:`cluster_budgets` (percluster.py);
- :func:`run_coreset` (run.py): the ``strata coreset`` step on a run directory.
"""
from pipeline.coreset.kcenter import covering_radius, k_center_greedy, min_distance_to_set, stratified_k_center
from pipeline.coreset.percluster import cluster_budgets, per_cluster_k_center
from pipeline.coreset.run import run_coreset

__all__ = [
    "k_center_greedy",
    "stratified_k_center",
    "covering_radius",
    "min_distance_to_set",
    "per_cluster_k_center",
    "cluster_budgets",
    "run_coreset",
]
