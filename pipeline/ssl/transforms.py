"""Two-view augmentation built from lightly's transforms, and the batch collate that applies it.

Presets (``conf/ssl/augment/*.yaml``) name a lightly transform (``simclr`` or ``simsiam``) and its
arguments. The satellite preset turns on horizontal flip, vertical flip and a 90-degree rotation,
each with p=0.5, which together draw uniformly from the 8 symmetries of the square (overhead
imagery has no "up"), and turns grayscale off (colour separates fields, water and roofs).
"""

from __future__ import annotations

import random
import threading
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# torchvision/lightly transforms draw from the global torch, numpy and random generators; seeding
# them per batch is only reproducible while one thread at a time applies a transform.
_RNG_LOCK = threading.Lock()


def build_two_view_transform(augment: dict[str, Any], image_size: int, mean: Sequence[float], std: Sequence[float]):
    """lightly ``SimCLRTransform`` / ``SimSiamTransform`` producing two normalised ``(3, S, S)`` views.

    ``augment`` = ``{"kind": "simclr" | "simsiam", **lightly keyword arguments}``.
    """
    from lightly.transforms import SimCLRTransform, SimSiamTransform

    kwargs = dict(augment)
    kind = kwargs.pop("kind", "simclr")
    kwargs.pop("name", None)
    if "sigmas" in kwargs:
        kwargs["sigmas"] = tuple(kwargs["sigmas"])
    if isinstance(kwargs.get("rr_degrees"), list):
        kwargs["rr_degrees"] = tuple(kwargs["rr_degrees"])
    classes = {"simclr": SimCLRTransform, "simsiam": SimSiamTransform}
    if kind not in classes:
        raise ValueError(f"unknown augmentation kind {kind!r}: use simclr or simsiam")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 px, got {image_size}")
    return classes[kind](input_size=image_size, normalize={"mean": list(mean), "std": list(std)}, **kwargs)


def batch_seed(seed: int, epoch: int, ids: Sequence[str]) -> int:
    """Seed of one batch's augmentations: a hash of ``(seed, epoch, ids)``, independent of timing."""
    digest = zlib.crc32("\x00".join(map(str, ids)).encode())
    return int(np.random.SeedSequence([seed, epoch, digest]).generate_state(1)[0])


class TwoViewCollate:
    """Ray Data ``collate_fn``: ``{"id", "image"}`` numpy batch -> ``(view0, view1)`` float tensors.

    Decoding and augmentation run here, on the training worker's CPU, in Ray Data's prefetch
    thread, so they overlap with the previous step's forward/backward. Images that cannot be
    decoded are replaced by another image of the same batch (keeps every worker's batch the same
    size, which the distributed all-gather needs) and counted in ``self.rejected``.
    """

    def __init__(
        self,
        augment: dict[str, Any],
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        epoch: int = 0,
    ):
        self.transform = build_two_view_transform(augment, image_size, mean, std)
        self.image_size = image_size
        self.seed, self.epoch = seed, epoch
        self.rejected = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        images = decode_images(list(batch["image"]), draft_size=2 * self.image_size)
        good = [i for i, img in enumerate(images) if img is not None]
        if not good:
            raise ValueError(f"no decodable image in a batch of {len(images)}")
        self.rejected += len(images) - len(good)
        images = [img if img is not None else images[good[i % len(good)]] for i, img in enumerate(images)]
        ids = [str(x) for x in batch["id"]] if "id" in batch else [str(i) for i in range(len(images))]
        with _RNG_LOCK:
            seed = batch_seed(self.seed, self.epoch, ids)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            pairs = [self.transform(img) for img in images]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def decode_images(data: list[bytes | None], draft_size: int | None = None) -> list:
    """PIL RGB images (``None`` where the bytes cannot be decoded)."""
    from pipeline.io.images import RejectedImage, decode_rgb

    out = []
    for item in data:
        try:
            out.append(decode_rgb(item, draft_size=draft_size))
        except RejectedImage:
            out.append(None)
    return out
