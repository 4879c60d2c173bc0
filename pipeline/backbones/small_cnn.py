"""A small CNN for tiny (32-64 px) images, the default SSL backbone (``conf/ssl/*.yaml``)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.backbones import register
from pipeline.backbones.base import Backbone, Features, load_weights, pool_stages


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages of stride 2 (widths ``w, 2w, 4w, 8w``), then global average pooling.

    ``blocks_per_stage`` extra stride-1 conv layers deepen each stage. With ``w=32`` a 64 px
    image costs about 15 M multiply-adds per forward pass (one block per stage), so it trains on
    a laptop CPU; the feature dimension is ``8 w``.
    """

    def __init__(self, width: int, blocks_per_stage: int):
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

    def stages(self) -> nn.Module:
        return SmallCNNStages(self)


class SmallCNNStages(nn.Module):
    """Multi-scale features of :class:`SmallCNN`: its last two (stride 8 and 16) stages, pooled."""

    def __init__(self, net: SmallCNN):
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


@register("small_cnn")
def small_cnn(checkpoint: str | None, features: Features, width: int, blocks_per_stage: int) -> Backbone:
    """``SmallCNN(width, blocks_per_stage)``, random init unless ``checkpoint`` is its state dict."""
    net = SmallCNN(width, blocks_per_stage)
    if checkpoint:
        load_weights(net, checkpoint, "small_cnn", optional=())
    module = net if features == "head" else SmallCNNStages(net)
    return Backbone(module, module.dim)
