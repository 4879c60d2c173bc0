"""Near-duplicate removal: exact (decoded-pixel hash) and semantic (cosine >= 1 - eps in k-means clusters).

Public API:

- :func:`pixel_hash`, :class:`PixelHashStage` (hashing.py): content hash, usable inside the embed pipeline;
- :func:`exact_duplicates`, :func:`semantic_duplicates`, :func:`leader_groups`, :func:`keep_priority`
  (semantic.py): pure functions on arrays;
- :func:`find_duplicates`, :func:`run_dedup` (run.py): the ``strata dedup`` step on a run directory.
"""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "dedup_config": "config",
    "PIXEL_HASH": "hashing",
    "PixelHashStage": "hashing",
    "pixel_hash": "hashing",
    "find_duplicates": "run",
    "run_dedup": "run",
    "exact_duplicates": "semantic",
    "keep_priority": "semantic",
    "leader_groups": "semantic",
    "semantic_duplicates": "semantic",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
