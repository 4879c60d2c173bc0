"""Settings of the sample step (``conf/sampling/default.yaml``; light)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults
from pipeline.sampling.objectives import CHOICES, OBJECTIVES


def check_selection(sel: dict[str, Any], prefix: str) -> None:
    """``strategy`` (an objective), ``pick_level`` (int >= 1 or ``budget``), ``allocation_power`` (>= 0) and
    ``budget_split`` (> 0 or None)."""
    if sel["strategy"] not in OBJECTIVES:
        raise ValueError(f"{prefix}.strategy must be one of {tuple(OBJECTIVES)}, got {sel['strategy']!r}")
    level = sel["pick_level"]
    if level != "budget" and not (isinstance(level, int) and not isinstance(level, bool) and level >= 1):
        raise ValueError(f"{prefix}.pick_level must be an integer >= 1 or 'budget', got {level!r}")
    if not float(sel["allocation_power"]) >= 0:
        raise ValueError(f"{prefix}.allocation_power must be >= 0, got {sel['allocation_power']!r}")
    split = sel["budget_split"]
    if split is not None and (isinstance(split, bool) or not isinstance(split, int | float) or not split > 0):
        raise ValueError(f"{prefix}.budget_split must be a number > 0 or null, got {split!r}")


def sampling_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over ``conf/sampling/default.yaml``; checks the strategy, pick level, size and multiplier."""
    c = with_defaults("sampling/default", cfg)
    if c["strategy"] not in CHOICES:
        raise ValueError(f"sample.strategy must be one of {CHOICES}, got {c['strategy']!r}")
    if c["strategy"] != "auto":
        check_selection(c, "sample")
        if c["pick_level"] == "budget" and int(c["multiplier"]) > 1:
            raise ValueError("sample.pick_level=budget picks each point once: it needs sample.multiplier=1")
    for key in ("small", "large", "repeats"):
        check_selection(c["auto"][key], f"sample.auto.{key}")
        if key == "repeats" and c["auto"][key]["pick_level"] == "budget":
            raise ValueError("sample.auto.repeats.pick_level cannot be budget (budget clusters pick each point once)")
    if int(c["target_size"]) < 1 or int(c["multiplier"]) < 1:
        raise ValueError(
            f"sample.target_size and sample.multiplier must be >= 1, got {c['target_size']} and {c['multiplier']}"
        )
    return c
