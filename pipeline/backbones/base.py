"""What every backbone entry returns (:class:`Backbone`) and the multi-scale ``stages`` pooling.

``features`` picks what is pooled: ``head`` (the last layer, as trained) or ``stages`` (multi-scale:
the global-average-pooled output of every stage from stride 8 on, each L2-normalised, concatenated
and scaled by ``1/sqrt(stages)``; 744-d for EfficientNet-Lite0, 896 / 3584-d for ResNet-18 / 50,
``12 w`` for an SSL ``SmallCNN`` of width ``w``). Mid-level stages describe texture and layout,
which transfer to aerial scenes better than the ImageNet-specific last layer (BENCHMARKS.md, active
labeling). ``projection`` (``ssl`` only; set by ``embed.reduce=head``): the checkpoint's trained
projection head on top of the backbone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURES = ("head", "stages", "projection")
Features = Literal["head", "stages", "projection"]


@dataclass(frozen=True)
class Backbone:
    """A feature extractor ``(B, 3, H, W) -> (B, dim)`` plus the preprocessing it expects."""

    module: nn.Module
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int | None = None  # preferred input side, when the weights imply one


def pool_stages(maps: list[torch.Tensor]) -> torch.Tensor:
    """Global-average-pool each (B, C_i, H_i, W_i) map, L2-normalise it, concatenate, scale to unit norm."""
    parts = [nn.functional.normalize(m.mean(dim=(2, 3)), dim=1) for m in maps]
    return torch.cat(parts, dim=1) / math.sqrt(len(parts))


class ResNetStages(nn.Module):
    """Multi-scale features of a torchvision ResNet: pooled ``layer2``, ``layer3``, ``layer4``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        last = [net.layer2[-1], net.layer3[-1], net.layer4[-1]]
        self.dim = sum(getattr(b, "conv3", b.conv2).out_channels for b in last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))
        maps = [n.layer2(x)]
        maps.append(n.layer3(maps[-1]))
        maps.append(n.layer4(maps[-1]))
        return pool_stages(maps)


def stage_features(module: nn.Module) -> nn.Module:
    """Wrap a ResNet or a module with its own ``stages()`` wrapper (``SmallCNN``) to output pooled stages."""
    if hasattr(module, "stages"):
        return module.stages()
    if all(hasattr(module, f"layer{i}") for i in (2, 3, 4)):
        return ResNetStages(module)
    raise ValueError(f"embed.features=stages does not know the stages of {type(module).__name__}")


def load_weights(net: nn.Module, checkpoint: str, name: str, optional: tuple[str, ...]) -> None:
    """Load a state dict (plain, ``{"state_dict": ...}``, keys optionally prefixed ``module.`` or
    ``backbone.``) into ``net``; a missing key not starting with one of ``optional`` (e.g. the
    dropped classifier ``fc.``) is a one-line error naming ``checkpoint``."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    missing, _ = net.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith(optional)]:
        raise ValueError(f"{checkpoint}: not a {name} state dict (missing {missing[:3]})")
