"""Embedding: backbones, the plain :class:`Embedder`, and the Ray Data embedding stage."""

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "EmbedConfig": "config",
    "Embedder": "embedder",
    "EmbedStage": "stage",
    "embed_dataset": "stage",
    "run_embed": "stage",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
