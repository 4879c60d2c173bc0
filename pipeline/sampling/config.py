"""Settings of the sample step (``conf/sampling/default.yaml``; light)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults

STRATEGIES = ("closest", "random")


def sampling_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over ``conf/sampling/default.yaml``; checks the strategy, size and multiplier."""
    c = with_defaults("sampling/default", cfg)
    if c["strategy"] not in STRATEGIES:
        raise ValueError(f"sample.strategy must be one of {STRATEGIES}, got {c['strategy']!r}")
    if int(c["target_size"]) < 1 or int(c["multiplier"]) < 1:
        raise ValueError(
            f"sample.target_size and sample.multiplier must be >= 1, got {c['target_size']} and {c['multiplier']}"
        )
    return c
