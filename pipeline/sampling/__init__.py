"""Hierarchical balanced sampling over k-means clusters (water-filling allocation).

- :func:`water_filling`, :func:`segmented_water_filling` (water_filling.py): per-cluster budgets,
  reusable wherever a budget must be spread evenly over groups of given sizes;
- :func:`hierarchical_balanced_sampling` (balanced.py): the selection over a cluster hierarchy;
- :func:`run_sample` (run.py): the ``strata sample`` stage writing ``manifest.parquet``.
"""
from pipeline.sampling.balanced import BalancedSelection, hierarchical_balanced_sampling, points_per_cluster
from pipeline.sampling.run import build_manifest, run_sample
from pipeline.sampling.water_filling import segmented_water_filling, water_filling

__all__ = [
    "BalancedSelection",
    "hierarchical_balanced_sampling",
    "points_per_cluster",
    "build_manifest",
    "run_sample",
    "segmented_water_filling",
    "water_filling",
]
