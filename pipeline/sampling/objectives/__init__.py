"""Selection objectives: which points of a level-1 cluster the balanced sampling takes first.

Every objective returns ``rank`` (n,) over the CSR positions of the level-1 clusters: the pick
order inside each cluster (0 = first). A cluster with budget b and n points then gives point i
the multiplicity ``floor(b / n) + [rank_i < b mod n]`` (:mod:`pipeline.sampling.balanced`).

``OBJECTIVES`` is the registry (one module per entry; a new objective is one module, its
settings in ``conf/sampling/default.yaml`` and its test). ``auto`` is not an entry: it is
resolved by :func:`resolve_selection` from the budget (objective, pick level, allocation), by the rule measured in
``benchmarks/selection_downstream.py`` (BENCHMARKS.md, issue 32).
"""

from __future__ import annotations

from pipeline.sampling.objectives.base import Objective
from pipeline.sampling.objectives.closest import CLOSEST
from pipeline.sampling.objectives.coverage import COVERAGE
from pipeline.sampling.objectives.random import RANDOM
from pipeline.sampling.objectives.typical import TYPICAL

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (CLOSEST, RANDOM, TYPICAL, COVERAGE)}
CHOICES = (*OBJECTIVES, "auto")


def resolve_selection(cfg: dict, target_size: int, n_items: int) -> dict:
    """What to run: ``{"strategy", "pick_level", "allocation_power", "budget_split"}`` of ``cfg`` (the sample settings),
    or for ``strategy: auto`` the rule measured on the labelling benchmark:

    ``auto.small`` while ``target_size <= auto.max_fraction * n_items`` and ``target_size <=
    auto.max_budget_clusters``, else ``auto.large``; with ``multiplier`` > 1 (repeats allowed)
    ``auto.repeats``, since budget clusters pick each point once.
    """
    keys = ("strategy", "pick_level", "allocation_power", "budget_split")
    name = cfg["strategy"]
    if name != "auto":
        if name not in OBJECTIVES:
            raise ValueError(f"sampling strategy must be one of {CHOICES}, got {name!r}")
        return {k: cfg[k] for k in keys}
    auto = cfg["auto"]
    small = target_size <= float(auto["max_fraction"]) * n_items and target_size <= int(auto["max_budget_clusters"])
    chosen = auto["repeats" if int(cfg.get("multiplier", 1)) > 1 else "small" if small else "large"]
    if chosen["strategy"] not in OBJECTIVES:
        raise ValueError(f"sample.auto names {chosen['strategy']!r}; must be one of {tuple(OBJECTIVES)}")
    return {k: chosen[k] for k in keys}


__all__ = ["CHOICES", "OBJECTIVES", "Objective", "resolve_selection"]
