"""Duplicate removal: exact (decoded-pixel hash), near-duplicate copies (D4 pHash + crop registration,
threshold calibrated per collection) and, optionally, semantic redundancy (cosine >= 1 - eps in
k-means clusters).

Public API:

- :func:`pixel_hash`, :class:`SignatureStage`, :func:`image_signatures`, :func:`read_signatures`
  (hashing.py): per-image keys, stored as columns of the embeddings by the embed step;
- :func:`d4_phash`, :func:`grey_grid` (perceptual.py): the D4-invariant perceptual hash;
- :func:`candidate_pairs` (candidates.py): copy candidates (hash bands + descriptor kNN, in process
  or as Ray tasks);
- :func:`copy_scores`, :func:`copy_distances` (copies.py): their verification (pHash bits, registered residual);
- :func:`synthetic_copy`, :func:`joint_rank`, :func:`choose_threshold` (calibration.py): per-collection threshold;
- :func:`keeper_groups` (grouping.py): copy groups without chaining;
- :func:`plan_copies` (plan.py): predicted cost for ``strata plan``;
- :func:`exact_duplicates`, :func:`semantic_duplicates`, :func:`leader_groups`, :func:`leaders_from_pairs`,
  :func:`keep_priority` (semantic.py): pure functions on arrays;
- :func:`find_duplicates`, :func:`run_dedup` (run.py): the ``strata dedup`` step on a run directory.
"""
