"""Settings of the embed step (schema of ``conf/embed/*.yaml``; light: no torch)."""

from __future__ import annotations

from dataclasses import fields

from pipeline.config import schema


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
    pixel_hash: bool = True  # internal: add a `pixel_hash` column (exact-duplicate key)

    @classmethod
    def from_dict(cls, cfg: dict | None) -> EmbedConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (cfg or {}).items() if k in known})
