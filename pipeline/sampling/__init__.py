"""Hierarchical balanced sampling over k-means clusters (water-filling allocation).

- :func:`water_filling`, :func:`segmented_water_filling` (water_filling.py): per-cluster budgets,
  reusable wherever a budget must be spread evenly over groups of given sizes;
- :func:`hierarchical_balanced_sampling` (balanced.py): the selection over a cluster hierarchy;
- :func:`pipeline.sampling.budget_clusters.budget_clusters`: k-means with k = the budget (TypiClust);
- :func:`run_sample` (run.py): the ``strata sample`` stage writing ``manifest.parquet``.
"""
