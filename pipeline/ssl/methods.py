"""SimCLR and SimSiam as ``backbone + head(s) + loss`` built from lightly's modules.

Both models take the two augmented views and return the loss, so one ``forward`` call does the
whole step (what DistributedDataParallel needs to synchronise gradients once).

- SimCLR: ``z = g(f(x))``, NT-Xent over the ``2N`` projections of the global batch
  ``l(i, j) = -log exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t)``, with negatives
  gathered from every worker (``gather_distributed``).
- SimSiam: ``z = g(f(x))``, ``p = h(z)``,
  ``L = -1/2 [cos(p_0, stopgrad(z_1)) + cos(p_1, stopgrad(z_0))]``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import SimCLRProjectionHead, SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from pipeline.config import load_group

METHODS = ("simclr", "simsiam")


class SimCLR(nn.Module):
    """SimCLR: projection head + NT-Xent loss."""

    method = "simclr"

    def __init__(
        self,
        backbone: nn.Module,
        dim: int,
        hidden_dim: int,
        output_dim: int,
        temperature: float,
        gather_distributed: bool,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(dim, hidden_dim, output_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def forward(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        z0 = self.projection_head(self.backbone(view0))
        z1 = self.projection_head(self.backbone(view1))
        return self.criterion(z0, z1)


class SimSiam(nn.Module):
    """SimSiam: projection + prediction heads, symmetric negative cosine with stop-gradient."""

    method = "simsiam"

    def __init__(
        self,
        backbone: nn.Module,
        dim: int,
        hidden_dim: int,
        output_dim: int,
        prediction_hidden_dim: int,
    ):
        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(dim, hidden_dim, output_dim)
        self.prediction_head = SimSiamPredictionHead(output_dim, prediction_hidden_dim, output_dim)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        z0 = self.projection_head(self.backbone(view0))
        z1 = self.projection_head(self.backbone(view1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))


def build_ssl_model(
    method: str, backbone: nn.Module, dim: int, head: dict[str, Any] | None = None, distributed: bool = False
) -> nn.Module:
    """SimCLR or SimSiam around ``backbone`` (feature dim ``dim``); ``head`` sets head sizes/temperature
    over ``conf/ssl/<method>.yaml``'s ``head`` (the one place their defaults live)."""
    if method not in METHODS:
        raise ValueError(f"unknown ssl method {method!r}: use one of {METHODS}")
    head = {**load_group(f"ssl/{method}")["head"], **(head or {})}
    if method == "simclr":
        head.pop("prediction_hidden_dim", None)
        return SimCLR(backbone, dim, gather_distributed=distributed, **head)
    if method == "simsiam":
        head.pop("temperature", None)
        return SimSiam(backbone, dim, **head)
    raise ValueError(f"unknown ssl method {method!r}: use one of {METHODS}")
