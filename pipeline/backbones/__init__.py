"""Backbone registry: one module per entry in this package, shared by the embed step and SSL pretraining.

An entry is a factory ``(checkpoint, features, **options) -> Backbone`` registered under its name
with :func:`register` (model: ``pipeline/export/writers.py:WRITERS``). A new backbone is one module
here, its ``conf/embed/<name>.yaml`` and its test; nothing else names it. Entries are found by
importing every module of this package once (:func:`registry`); heavy imports (torchvision,
efficientnet) stay inside the factories, so discovery costs one ``import torch``.

- ``build_backbone`` (embed): weights from ``checkpoint`` (or the entry's own), pooled ``features``.
- ``build_ssl_backbone`` (pretraining): random init, the plain ``(B, 3, H, W) -> (B, D)`` module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.backbones.base import FEATURES, Backbone, Features
from pipeline.discovery import Registry

BackboneFactory = Callable[..., Backbone]
REGISTRY: Registry[BackboneFactory] = Registry("backbone", __name__, __path__)
BACKBONES = REGISTRY.entries
register = REGISTRY.register
registry = REGISTRY.all


def build_backbone(name: str, checkpoint: str | None, features: Features, **options: Any) -> Backbone:
    """The feature extractor ``name`` pooling ``features`` (``head`` | ``stages`` | ``projection``),
    in eval mode on the CPU; ``options`` go to the entry (e.g. ``small_input``, ``width``)."""
    if features not in FEATURES:
        raise ValueError(f"embed.features must be one of {FEATURES}, got {features!r}")
    if features == "projection" and name != "ssl":
        raise ValueError("embed.features=projection (embed.reduce=head) needs embed=ssl")
    backbone = REGISTRY.get(name, "embed.backbone")(checkpoint, features, **options)
    backbone.module.eval()
    return backbone


def build_ssl_backbone(name: str, **options: Any) -> tuple[Any, int]:
    """``(module, feature_dim)`` of backbone ``name`` with random weights, for pretraining (train mode)."""
    backbone = REGISTRY.get(name, "ssl backbone")(None, "head", **options)
    return backbone.module, backbone.dim


__all__ = ["BACKBONES", "Backbone", "build_backbone", "build_ssl_backbone", "register", "registry"]
