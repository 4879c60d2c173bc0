"""Similarity search: partitioned FAISS index, filters, tile voting, query service and HTTP API.

Library entry points (no Hydra, no Ray start-up here):

- :class:`IndexConfig`, :class:`SearchIndex` (``build``, ``from_embeddings``, ``search``,
  ``search_rows``, ``save``, ``load``);
- :func:`build_run_index` (``strata index``), :class:`SearchService` (``strata search`` / ``serve``);
- :func:`create_app` (FastAPI) in :mod:`pipeline.search.app` (FastAPI is imported only there).
"""
