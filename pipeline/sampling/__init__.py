"""Hierarchical balanced sampling over k-means clusters (water-filling allocation).

- :func:`water_filling`, :func:`segmented_water_filling` (water_filling.py): per-cluster budgets,
  reusable wherever a budget must be spread evenly over groups of given sizes;
- :func:`hierarchical_balanced_sampling` (balanced.py): the selection over a cluster hierarchy;
- :func:`pipeline.sampling.budget_clusters.budget_clusters`: k-means with k = the budget (TypiClust);
- :func:`run_sample` (run.py): the ``strata sample`` stage writing ``manifest.parquet``.
"""

from pipeline.lazy import lazy_exports
from pipeline.sampling.water_filling import segmented_water_filling, water_filling  # light; its module shares the name

_EXPORTS = {
    "sampling_config": "config",
    "BalancedSelection": "balanced",
    "hierarchical_balanced_sampling": "balanced",
    "points_per_cluster": "balanced",
    "build_manifest": "run",
    "run_sample": "run",
}
__all__ = [*_EXPORTS, "segmented_water_filling", "water_filling"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
