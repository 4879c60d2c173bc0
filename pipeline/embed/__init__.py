"""Embedding: backbones, the plain :class:`Embedder`, and the Ray Data embedding stage."""
