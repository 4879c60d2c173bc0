"""torchvision ResNets (random init, or a local ``checkpoint`` state dict); ``resnet18`` / ``resnet50``
are registered here, other depths are one module each (``resnet34.py``)."""

from __future__ import annotations

from torch import nn

from pipeline.backbones import register
from pipeline.backbones.base import Backbone, Features, ResNetStages, load_weights


def torchvision_resnet(name: str, checkpoint: str | None, features: Features, small_input: bool = False) -> Backbone:
    """torchvision ``name`` without its classifier (``fc`` = identity, keys kept torchvision's).

    ``small_input`` swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv (the usual
    CIFAR variant, for images of 32-64 px).
    """
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if small_input:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    if checkpoint:
        load_weights(net, checkpoint, f"torchvision {name}", optional=("fc.",))
    dim = net.fc.in_features
    net.fc = nn.Identity()
    if features == "head":  # the plain torchvision module, so its state dict keeps torchvision's keys
        return Backbone(net, dim)
    module = ResNetStages(net)
    return Backbone(module, module.dim)


@register("resnet18")
def resnet18(checkpoint: str | None, features: Features, small_input: bool = False) -> Backbone:
    return torchvision_resnet("resnet18", checkpoint, features, small_input)


@register("resnet50")
def resnet50(checkpoint: str | None, features: Features, small_input: bool = False) -> Backbone:
    return torchvision_resnet("resnet50", checkpoint, features, small_input)
