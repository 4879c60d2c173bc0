"""Embedder: decode -> resize -> normalise -> backbone forward -> (optionally) L2-normalise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.backbones import Backbone, build_backbone
from pipeline.dedup.hashing import image_signature
from pipeline.embed.config import EmbedConfig
from pipeline.io.images import decode_rgb
from pipeline.malloc import keep_freed_memory


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0-7) of the dihedral group D4 applied to (B, C, H, W): rotation by ``k % 4`` quarter turns, then a horizontal flip if ``k >= 4``."""
    x = torch.rot90(x, k % 4, dims=(2, 3)) if k % 4 else x
    return x.flip(3) if k >= 4 else x


# Test-time views (elements of D4). Aerial and satellite scenes have no canonical orientation, so
# averaging over rotations/flips gives orientation-invariant features (BENCHMARKS.md, active labeling).
TTA_VIEWS: dict[str, tuple[int, ...]] = {"none": (0,), "flip": (0, 4), "rot4": (0, 1, 2, 3), "d4": tuple(range(8))}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("embed.device=cuda but no CUDA device is visible to this worker")
    return torch.device(device)


class Embedder:
    """Turns images into (N, D) float32 embeddings with one backbone; reusable outside Ray."""

    def __init__(self, cfg: EmbedConfig | dict | None = None, backbone: Backbone | None = None):
        self.cfg = cfg if isinstance(cfg, EmbedConfig) else EmbedConfig.from_dict(cfg)
        if self.cfg.num_threads:
            torch.set_num_threads(int(self.cfg.num_threads))
        self.device = resolve_device(self.cfg.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # activations reused per batch instead of mmap'd anew (pipeline.malloc)
        if self.cfg.tta not in TTA_VIEWS:
            raise ValueError(f"embed.tta must be one of {sorted(TTA_VIEWS)}, got {self.cfg.tta!r}")
        self.views = TTA_VIEWS[self.cfg.tta]
        self.backbone = backbone or build_backbone(self.cfg.backbone, self.cfg.checkpoint, self.cfg.features)
        self.module = self.backbone.module.to(self.device).eval()
        self.image_size = int(self.cfg.image_size or self.backbone.image_size or 224)
        self._mean = torch.tensor(self.backbone.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.backbone.std, device=self.device).view(1, 3, 1, 1)

    @property
    def dim(self) -> int:
        return self.backbone.dim

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> (S, S, 3) uint8 array at the model's input size."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded bytes -> preprocessed array; raises ``RejectedImage`` for bad input."""
        return self.preprocess(decode_rgb(data, max_pixels=self.cfg.max_pixels, draft_size=self.image_size))

    def decode_with_signature(self, data: bytes) -> tuple[np.ndarray, tuple[str, np.ndarray, int]]:
        """Like :meth:`decode`, plus the copy signature of the full-resolution image (pixel hash,
        grey grid, pixel count: :func:`pipeline.dedup.hashing.image_signature`), from the same decode."""
        img = decode_rgb(data, max_pixels=self.cfg.max_pixels)
        return self.preprocess(img), image_signature(img)

    @torch.inference_mode()
    def embed_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, D) float32 embeddings, in batches of ``cfg.batch_size``."""
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        bs = max(1, int(self.cfg.batch_size))
        use_amp = self.cfg.amp and self.device.type == "cuda"
        for start in range(0, len(pixels), bs):
            x = torch.from_numpy(np.ascontiguousarray(pixels[start : start + bs])).to(self.device, non_blocking=True)
            x = (x.permute(0, 3, 1, 2).float().div_(255.0) - self._mean) / self._std
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                feats = sum(self.module(_dihedral(x, k)).float() for k in self.views) / len(self.views)
            if self.cfg.l2_normalize:
                feats = torch.nn.functional.normalize(feats, dim=1)
            out[start : start + len(x)] = feats.cpu().numpy()
        return out

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), np.float32)
        return self.embed_arrays(np.stack([self.preprocess(im) for im in images]))

    def embed_bytes(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> embeddings; raises ``RejectedImage`` on the first bad one."""
        if not len(blobs):
            return np.zeros((0, self.dim), np.float32)
        return self.embed_arrays(np.stack([self.decode(b) for b in blobs]))
