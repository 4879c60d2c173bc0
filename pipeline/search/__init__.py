"""Similarity search: partitioned FAISS index, filters, tile voting, query service and HTTP API.

Library entry points (no Hydra, no Ray start-up here):

- :class:`IndexConfig`, :class:`SearchIndex` (``build``, ``from_embeddings``, ``search``,
  ``search_rows``, ``save``, ``load``);
- :func:`build_run_index` (``strata index``), :class:`SearchService` (``strata search`` / ``serve``);
- :func:`create_app` (FastAPI) in :mod:`pipeline.search.app` (imported lazily: FastAPI is optional
  for library users).
"""
from pipeline.search.build import build_run_index
from pipeline.search.filters import FilterError, filter_mask
from pipeline.search.index import IndexConfig, SearchIndex
from pipeline.search.service import QueryError, SearchService, UnknownIdError
from pipeline.search.tiles import bucket_vote, cut_tiles, parse_tiles

__all__ = [
    "IndexConfig",
    "SearchIndex",
    "build_run_index",
    "SearchService",
    "QueryError",
    "UnknownIdError",
    "FilterError",
    "filter_mask",
    "parse_tiles",
    "cut_tiles",
    "bucket_vote",
]
