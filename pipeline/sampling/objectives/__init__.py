"""Selection objectives: which points of a level-1 cluster the balanced sampling takes first.

Every objective returns ``rank`` (n,) over the CSR positions of the level-1 clusters: the pick
order inside each cluster (0 = first). A cluster with budget b and n points then gives point i
the multiplicity ``floor(b / n) + [rank_i < b mod n]`` (:mod:`pipeline.sampling.balanced`).

``OBJECTIVES`` is the registry (one module per entry; a new objective is one module, its
settings in ``conf/sampling/default.yaml`` and its test). ``auto`` is not an entry: it is
resolved by :func:`resolve_objective` from the budget, by the rule measured in
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


def resolve_objective(name: str, target_size: int, n_items: int, auto: dict) -> str:
    """The objective to run: ``name``, or for ``auto`` the rule measured on the labelling benchmark.

    ``auto``: ``auto.small`` while ``target_size <= auto.max_fraction * n_items`` (small budgets,
    where one pick per dense region matters most), else ``auto.large``.
    """
    if name != "auto":
        if name not in OBJECTIVES:
            raise ValueError(f"sampling strategy must be one of {CHOICES}, got {name!r}")
        return name
    chosen = auto["small"] if target_size <= float(auto["max_fraction"]) * n_items else auto["large"]
    if chosen not in OBJECTIVES:
        raise ValueError(f"sample.auto names {chosen!r}; must be one of {tuple(OBJECTIVES)}")
    return chosen


__all__ = ["CHOICES", "OBJECTIVES", "Objective", "resolve_objective"]
