"""Diverse data sampler: k-center greedy coresets (exact, stratified, per-cluster).

Public API:

- :func:`k_center_greedy`, :func:`stratified_k_center`, :func:`covering_radius`,
  :func:`min_distance_to_set` (kcenter.py): pure functions on (N, D) arrays;
- :func:`per_cluster_k_center`, :func:`cluster_budgets` (percluster.py);
- :func:`run_coreset` (run.py): the ``strata coreset`` step on a run directory.
"""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "coreset_config": "config",
    "covering_radius": "kcenter",
    "k_center_greedy": "kcenter",
    "min_distance_to_set": "kcenter",
    "stratified_k_center": "kcenter",
    "cluster_budgets": "percluster",
    "per_cluster_k_center": "percluster",
    "run_coreset": "run",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
