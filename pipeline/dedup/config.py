"""Settings of the dedup step (``conf/dedup/default.yaml``; light: no torch)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults

KEEP_RULES = ("centroid", "first", "random")


def dedup_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over the defaults of ``conf/dedup/default.yaml``; unknown keys and bad values are an
    error (``enabled`` is the job's switch and passes through)."""
    c = with_defaults("dedup/default", cfg, passthrough=("enabled",))
    if c["keep"] not in KEEP_RULES:
        raise ValueError(f"dedup.keep must be one of {KEEP_RULES}, got {c['keep']!r}")
    if not 0 <= float(c["eps"]) <= 2:
        raise ValueError(f"dedup.eps must be a cosine distance in [0, 2], got {c['eps']}")
    return c
