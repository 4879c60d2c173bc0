"""Selection strategies (a registry, one module per entry): class probabilities -> a priority per image.

Higher priority = label first. ``p`` is either (N,) positive-class probabilities (binary) or an
(N, C) matrix of class probabilities; with ``p_(1) >= p_(2)`` the two largest per row:

    least_confidence   u = 1 - p_(1)
    margin             u = 1 - (p_(1) - p_(2))
    entropy            u = -sum_c p_c log p_c
    positive           u = p_pos                         (highest scores first)
    random             u = U(0, 1)                       (uniform sample without replacement)
    gaussian           u = log(U) / w,  w = exp(-(p_pos - 0.5)^2 / (2 sigma^2))

``gaussian`` draws a weighted sample without replacement with weights from N(p; 0.5, sigma)
(Efraimidis-Spirakis keys: the top-k of ``log(U)/w`` is such a sample). For binary ``p`` the three
uncertainty scores rank images identically (all decrease with |p - 0.5|); they differ for C > 2.

An entry is ``(p, rng, cfg) -> (N,) priority`` registered under its name with :func:`register`
(``cfg``: the loop's :class:`pipeline.active.config.ActiveConfig`, read for the entry's own settings).
A new strategy is one module here and its test; ``active.strategy=<name>`` then selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from pipeline.active.strategies.base import top_k
from pipeline.discovery import Registry


class StrategySettings(Protocol):
    """The loop settings strategies read (``ActiveConfig`` has them)."""

    sigma: float  # gaussian: the width of the weights N(p; 0.5, sigma)


Strategy = Callable[[np.ndarray, np.random.Generator, StrategySettings], np.ndarray]
REGISTRY: Registry[Strategy] = Registry("strategy", __name__, __path__)
STRATEGIES = REGISTRY.entries
register = REGISTRY.register
registry = REGISTRY.all


def check_strategy(name: str) -> None:
    """One-line error naming the choices when ``name`` is not a registered strategy."""
    REGISTRY.get(name)


def priority(name: str, p: np.ndarray, rng: np.random.Generator, cfg: StrategySettings) -> np.ndarray:
    """(N,) float64 priority of every image under strategy ``name`` (see module docstring)."""
    check_strategy(name)
    return STRATEGIES[name](p, rng, cfg).astype(np.float64, copy=False)


__all__ = ["STRATEGIES", "Strategy", "check_strategy", "priority", "register", "registry", "top_k"]
