"""Hierarchical k-means with resampling, distributed over Ray actors (Vo et al. 2024).

Public API:

- :func:`kmeans`, :func:`kmeans_plus_plus_init`: single-process building blocks (algorithm.py);
- :func:`hierarchical_kmeans`, :class:`KMeansConfig`, :func:`sort_clusters` (hierarchical.py);
- :func:`run_cluster` (run.py): the ``strata cluster`` step on a run directory; its outputs are
  read with :func:`pipeline.kmeans.levels.load_levels` / :func:`pipeline.kmeans.levels.load_point_ids`.
"""
