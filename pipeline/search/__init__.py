"""Similarity search: partitioned FAISS index, filters, tile voting, query service and HTTP API.

Library entry points (no Hydra, no Ray start-up here):

- :class:`IndexConfig`, :class:`SearchIndex` (``build``, ``from_embeddings``, ``search``,
  ``search_rows``, ``save``, ``load``);
- :func:`build_run_index` (``strata index``), :class:`SearchService` (``strata search`` / ``serve``);
- :func:`create_app` (FastAPI) in :mod:`pipeline.search.app` (imported lazily: FastAPI is optional
  for library users).
"""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "build_run_index": "build",
    "FilterError": "filters",
    "filter_mask": "filters",
    "IndexConfig": "config",
    "SearchIndex": "index",
    "QueryError": "service",
    "SearchService": "service",
    "UnknownIdError": "service",
    "bucket_vote": "tiles",
    "cut_tiles": "tiles",
    "parse_tiles": "tiles",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
