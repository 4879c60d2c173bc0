"""A ``strata pretrain`` checkpoint (backbone without heads, or through its trained projection head)."""

from __future__ import annotations

from pipeline.backbones import register
from pipeline.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone, Features, stage_features


@register("ssl")
def ssl(checkpoint: str | None, features: Features) -> Backbone:
    """The checkpoint's backbone at its training normalisation and size (``meta.json``)."""
    if not checkpoint:
        raise ValueError("embed.backbone=ssl needs embed.checkpoint=<path of a strata pretrain checkpoint>")
    from pipeline.ssl.checkpoint import load_backbone

    module, dim, meta = load_backbone(checkpoint, projection_head=features == "projection")
    if features == "stages":
        module = stage_features(module)
        dim = module.dim
    return Backbone(
        module,
        dim,
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        image_size=meta.get("image_size"),
    )
