"""Settings of the dedup step (``conf/dedup/default.yaml``; light: no torch)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults
from pipeline.engine import ENGINES

KEEP_RULES = ("largest", "centroid", "first", "random")


def dedup_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over the defaults of ``conf/dedup/default.yaml``; unknown keys and bad values are an
    error (``enabled`` is the job's switch and passes through)."""
    c = with_defaults("dedup/default", cfg, passthrough=("enabled",))
    if c["keep"] not in KEEP_RULES:
        raise ValueError(f"dedup.keep must be one of {KEEP_RULES}, got {c['keep']!r}")
    if not 0 <= float(c["eps"]) <= 2:
        raise ValueError(f"dedup.eps must be a cosine distance in [0, 2], got {c['eps']}")
    cp = c["copies"]
    if cp["threshold"] is not None and not float(cp["threshold"]) >= 0:
        raise ValueError(f"dedup.copies.threshold must be null or a residual >= 0, got {cp['threshold']}")
    levels = list(cp["recall_levels"] or [])
    if not levels or not all(0 < float(q) <= 1 for q in levels):
        raise ValueError(f"dedup.copies.recall_levels must be shares in (0, 1], got {cp['recall_levels']}")
    details = list(cp["detail_levels"] or [])
    if not details or not all(0 <= float(q) < 1 for q in details):
        raise ValueError(f"dedup.copies.detail_levels must be quantiles in [0, 1), got {cp['detail_levels']}")
    scales = cp["crop_scales"] or []
    if not scales or not all(g and all(0 < float(v) <= 1 for v in g) for g in scales):
        raise ValueError(f"dedup.copies.crop_scales must be lists of shares in (0, 1], got {cp['crop_scales']}")
    if not 0 <= int(cp["max_radius"]) <= 64:
        raise ValueError(f"dedup.copies.max_radius must be bits in [0, 64], got {cp['max_radius']}")
    if not 0 <= float(cp["max_false_match"]) <= 1:
        raise ValueError(f"dedup.copies.max_false_match must be a share in [0, 1], got {cp['max_false_match']}")
    if cp["engine"] not in ENGINES:
        raise ValueError(f"dedup.copies.engine must be one of {ENGINES}, got {cp['engine']!r}")
    if not int(cp["list_size"]) >= 1:
        raise ValueError(f"dedup.copies.list_size must be >= 1, got {cp['list_size']}")
    for key in ("bucket_size", "max_bucket", "nprobe", "flat_max", "train_per_list", "train_iters", "local_max_images"):
        if int(cp[key]) < 1:
            raise ValueError(f"dedup.copies.{key} must be >= 1, got {cp[key]}")
    return c
