"""torchvision ResNet-34 (512-d; ``stages`` 128 + 256 + 512 = 896-d): random init unless ``checkpoint``
names a local state dict (no download)."""

from __future__ import annotations

from pipeline.backbones import register
from pipeline.backbones.base import Backbone, Features
from pipeline.backbones.torchvision_resnet import torchvision_resnet


@register("resnet34")
def resnet34(checkpoint: str | None, features: Features, small_input: bool = False) -> Backbone:
    return torchvision_resnet("resnet34", checkpoint, features, small_input)
