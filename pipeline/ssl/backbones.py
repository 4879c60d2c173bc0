"""SSL backbones: torchvision ResNets and a small CNN for tiny (32-64 px) images.

Every backbone maps a normalised ``(B, 3, H, W)`` float tensor to ``(B, D)`` features (global
average pooling after the last stage, no classifier).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages of stride 2 (widths ``w, 2w, 4w, 8w``), then global average pooling.

    ``blocks_per_stage`` extra stride-1 conv layers deepen each stage. With ``w=32`` a 64 px
    image costs about 15 M multiply-adds per forward pass (one block per stage), so it trains on
    a laptop CPU; the feature dimension is ``8 w``.
    """

    def __init__(self, width: int = 32, blocks_per_stage: int = 1):
        super().__init__()
        if width < 1 or blocks_per_stage < 1:
            raise ValueError(f"SmallCNN needs width >= 1 and blocks_per_stage >= 1, got {width}, {blocks_per_stage}")
        layers: list[nn.Module] = []
        in_ch = 3
        for stage in range(4):
            out_ch = width * 2**stage
            for block in range(blocks_per_stage):
                stride = 2 if block == 0 else 1
                layers += [
                    nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                ]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.dim = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


def build_ssl_backbone(name: str, **kwargs: Any) -> tuple[nn.Module, int]:
    """``(module, feature_dim)`` for ``name`` in ``small_cnn`` / ``resnet18`` / ``resnet50``, random init.

    ``kwargs`` go to :class:`SmallCNN` (``width``, ``blocks_per_stage``); ResNets accept
    ``small_input=True``, which swaps the 7x7/stride-2 stem and max-pool for a 3x3/stride-1 conv
    (the usual CIFAR variant, for images of 32-64 px).
    """
    if name == "small_cnn":
        net = SmallCNN(**kwargs)
        return net, net.dim
    if name in ("resnet18", "resnet50"):
        import torchvision

        unknown = set(kwargs) - {"small_input"}
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)} for backbone {name!r}")
        net = getattr(torchvision.models, name)(weights=None)
        if kwargs.get("small_input", False):
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return net, dim
    raise ValueError(f"unknown ssl backbone {name!r}: use small_cnn, resnet18 or resnet50")
