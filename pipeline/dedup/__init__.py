"""Near-duplicate removal: exact (decoded-pixel hash) and semantic (cosine >= 1 - eps in k-means clusters).

Public API:

- :func:`pixel_hash`, :class:`PixelHashStage` (hashing.py): content hash, usable inside the embed pipeline;
- :func:`exact_duplicates`, :func:`semantic_duplicates`, :func:`leader_groups`, :func:`keep_priority`
  (semantic.py): pure functions on arrays;
- :func:`find_duplicates`, :func:`run_dedup` (run.py): the ``strata dedup`` step on a run directory.
"""
from pipeline.dedup.hashing import PIXEL_HASH, PixelHashStage, pixel_hash
from pipeline.dedup.run import find_duplicates, run_dedup
from pipeline.dedup.semantic import exact_duplicates, keep_priority, leader_groups, semantic_duplicates

__all__ = [
    "PIXEL_HASH",
    "PixelHashStage",
    "pixel_hash",
    "exact_duplicates",
    "semantic_duplicates",
    "leader_groups",
    "keep_priority",
    "find_duplicates",
    "run_dedup",
]
