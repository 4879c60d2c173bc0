"""Diverse data sampler: k-center greedy coresets (exact, stratified, per-cluster).

Public API:

- :func:`k_center_greedy`, :func:`stratified_k_center`, :func:`covering_radius`,
  :func:`min_distance_to_set` (kcenter.py): pure functions on (N, D) arrays;
- :func:`per_cluster_k_center`, :func:`cluster_budgets` (percluster.py);
- :func:`run_coreset` (run.py): the ``strata coreset`` step on a run directory.
"""
