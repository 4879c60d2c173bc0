"""Pretraining checkpoints: a directory with ``model.pt`` (weights, optimiser, epoch) and ``meta.json``.

``meta.json`` holds what a consumer needs to rebuild and feed the backbone: ``method``,
``backbone`` (``{"name", **options}``), ``dim``, ``image_size``, ``mean``, ``std``, ``epoch`` and the
per-epoch ``history`` (loss, lr, images/s).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from pipeline.backbones import build_ssl_backbone

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def save_checkpoint(
    directory: str,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra_state: dict[str, Any] | None = None,
) -> str:
    """Write ``model``'s state (``backbone.*`` and head weights), the optimiser state and ``meta``."""
    os.makedirs(directory, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else None,
        **(extra_state or {}),
    }
    torch.save(state, os.path.join(directory, MODEL_FILE))
    with open(os.path.join(directory, META_FILE), "w") as fh:
        json.dump({"format_version": FORMAT_VERSION, **meta}, fh, indent=2, sort_keys=True)
    return directory


def read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, meta)`` of the checkpoint directory ``path`` (or its ``model.pt``)."""
    directory = os.path.dirname(path) if os.path.isfile(path) else path
    model_file, meta_file = os.path.join(directory, MODEL_FILE), os.path.join(directory, META_FILE)
    if not (os.path.isfile(model_file) and os.path.isfile(meta_file)):
        raise FileNotFoundError(f"{path!r} is not a strata pretrain checkpoint (needs {MODEL_FILE} and {META_FILE})")
    with open(meta_file) as fh:
        meta = json.load(fh)
    state = torch.load(model_file, map_location="cpu", weights_only=True)
    return state, meta


def load_backbone(path: str, projection_head: bool = False) -> tuple[nn.Module, int, dict[str, Any]]:
    """The pretrained backbone without heads (or followed by its trained projection head when
    ``projection_head``), in eval mode on the CPU: ``(module, dim, meta)``.

    ``module`` maps a ``(B, 3, H, W)`` batch normalised with ``meta["mean"]``/``meta["std"]`` (at
    ``meta["image_size"]`` px, as in training) to ``(B, dim)`` features.
    """
    state, meta = read_checkpoint(path)
    options = dict(meta["backbone"])
    module, dim = build_ssl_backbone(options.pop("name"), **options)
    weights = {k.removeprefix("backbone."): v for k, v in state["model"].items() if k.startswith("backbone.")}
    module.load_state_dict(weights, strict=True)
    if dim != meta.get("dim", dim):
        raise ValueError(f"{path}: backbone dim {dim} differs from the recorded {meta['dim']}")
    if projection_head:
        if "head" not in meta:
            raise ValueError(
                f"{path}: the checkpoint does not record its head settings; pretrain again to embed through its head"
            )
        from pipeline.ssl.methods import build_ssl_model

        model = build_ssl_model(meta["method"], module, dim, meta["head"])
        head_state = {
            k.removeprefix("projection_head."): v for k, v in state["model"].items() if k.startswith("projection_head.")
        }
        model.projection_head.load_state_dict(head_state, strict=True)
        module = nn.Sequential(module, model.projection_head)
        dim = int(meta["head"]["output_dim"])
    module.eval()
    return module, dim, meta
