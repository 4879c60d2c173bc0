"""Embedding: backbones, the plain :class:`Embedder`, and the Ray Data embedding stage."""
from pipeline.embed.backbones import Backbone, build_backbone
from pipeline.embed.embedder import EmbedConfig, Embedder
from pipeline.embed.stage import EmbedStage, embed_dataset, run_embed

__all__ = ["Backbone", "build_backbone", "EmbedConfig", "Embedder", "EmbedStage", "embed_dataset", "run_embed"]
