"""Settings of the embed step (schema of ``conf/embed/*.yaml``; light: no torch)."""

from __future__ import annotations

from dataclasses import fields

from pipeline.config import schema
from pipeline.engine import ENGINES


@schema("embed/efficientnet_lite0")
class EmbedConfig:
    """``conf/embed/*.yaml`` (defaults and docs there; ``embed/efficientnet_lite0`` is the default option)."""

    backbone: str
    checkpoint: str | None
    features: str
    tta: str
    image_size: int | None  # None: the backbone's preferred size
    l2_normalize: bool
    device: str
    amp: bool
    batch_size: int
    num_threads: int
    max_pixels: int
    pool_size: int
    cpus_per_actor: float
    gpus_per_actor: float
    dim: int | None  # output width (pipeline.embed.reduce)
    reduce: str
    store: str | None  # SSL model store (pipeline.ssl.store)
    resolution: str | None
    engine: str  # auto | ray | local (pipeline.engine)
    local_max_images: int
    pixel_hash: bool = True  # internal: add the copy-signature columns (pipeline.dedup.hashing)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"embed.engine={self.engine}: choose auto, ray or local")
        if not isinstance(self.local_max_images, int) or self.local_max_images < 0:
            raise ValueError(f"embed.local_max_images={self.local_max_images}: a count of images (0: never local)")
        if self.reduce not in ("pca", "head"):
            raise ValueError(f"embed.reduce={self.reduce}: choose pca or head")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"embed.dim={self.dim}: a positive integer, or null for the backbone's full width")
        if self.reduce == "head" and self.dim is not None and self.backbone != "ssl":
            raise ValueError("embed.reduce=head needs embed=ssl (a checkpoint with a trained projection head)")
        if self.reduce == "head" and self.dim is not None:
            self.features = "projection"  # the backbone's features through the trained projection head

    @classmethod
    def from_dict(cls, cfg: dict | None) -> EmbedConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (cfg or {}).items() if k in known})
