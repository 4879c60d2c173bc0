"""Settings of the sample step (``conf/sampling/default.yaml``; light)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults
from pipeline.sampling.objectives import CHOICES, OBJECTIVES


def sampling_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over ``conf/sampling/default.yaml``; checks the strategy, size and multiplier."""
    c = with_defaults("sampling/default", cfg)
    if c["strategy"] not in CHOICES:
        raise ValueError(f"sample.strategy must be one of {CHOICES}, got {c['strategy']!r}")
    for key in ("small", "large"):
        if c["auto"][key] not in OBJECTIVES:
            raise ValueError(f"sample.auto.{key} must be one of {tuple(OBJECTIVES)}, got {c['auto'][key]!r}")
    if int(c["target_size"]) < 1 or int(c["multiplier"]) < 1:
        raise ValueError(
            f"sample.target_size and sample.multiplier must be >= 1, got {c['target_size']} and {c['multiplier']}"
        )
    return c
