"""Hierarchical k-means with resampling, distributed over Ray actors (Vo et al. 2024).

Public API:

- :func:`kmeans`, :func:`kmeans_plus_plus_init`: single-process building blocks (algorithm.py);
- :func:`hierarchical_kmeans`, :class:`KMeansConfig`, :func:`sort_clusters` (hierarchical.py);
- :func:`run_cluster` (run.py): the ``strata cluster`` stage on a run directory, and
  :func:`load_levels` / :func:`load_point_ids` to read its outputs.
"""
from pipeline.kmeans.algorithm import kmeans, kmeans_plus_plus_init, lloyd
from pipeline.kmeans.hierarchical import (
    KMeansConfig,
    LevelConfig,
    LevelResult,
    hierarchical_kmeans,
    sort_clusters,
)
from pipeline.kmeans.run import load_levels, load_point_ids, run_cluster

__all__ = [
    "kmeans",
    "kmeans_plus_plus_init",
    "lloyd",
    "KMeansConfig",
    "LevelConfig",
    "LevelResult",
    "hierarchical_kmeans",
    "sort_clusters",
    "run_cluster",
    "load_levels",
    "load_point_ids",
]
