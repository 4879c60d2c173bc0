"""Diversity on top of a strategy (a registry, one module per entry): choose ``k`` of the top-priority
candidates, not all alike.

Every method takes candidate embeddings ``x`` (M, D), their priorities ``u`` (M,) and returns
``k`` distinct positions into the candidates, in pick order.

- ``none``: the ``k`` highest priorities.
- ``iterative_proximity``: picks in blocks of ``block_size``; before each block the score is

      a_i = u_hat_i - lambda * max(0, max_{j picked} cos(x_i, x_j)),
      u_hat = (u - min u) / (max u - min u),

  so candidates close to an already-picked image drop down.
- ``clustering``: k-means (``pipeline.kmeans.kmeans``) on the candidates; cluster ``c`` of size
  ``m_c`` gets a quota ``q_c`` from the largest-remainder rounding of ``k m_c / M`` (so
  ``q_c <= m_c`` and ``sum q_c = k``), filled with its most uncertain members.
- ``coreset``: k-center greedy (``pipeline.coreset.kcenter.k_center_greedy``, cosine distance)
  among the candidates, counting the already-labeled images as centres when given.

An entry is ``(x, u, k, labeled_x, seed, cfg) -> (k,) positions`` registered with :func:`register`
(``cfg``: the loop's :class:`pipeline.active.config.ActiveConfig`, read for the entry's own settings).
A new method is one module here and its test; ``active.diversity=<name>`` then selects it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from pipeline.discovery import Registry


class DiversitySettings(Protocol):
    """The loop settings diversity methods read (``ActiveConfig`` has them)."""

    block_size: int  # iterative_proximity: picks per block
    penalty: float  # iterative_proximity: weight of the closeness penalty
    n_clusters: int  # clustering: k-means clusters among the candidates


Diversity = Callable[[np.ndarray, np.ndarray, int, np.ndarray | None, int, DiversitySettings], np.ndarray]
REGISTRY: Registry[Diversity] = Registry("diversity", __name__, __path__)
DIVERSITY = REGISTRY.entries
register = REGISTRY.register
registry = REGISTRY.all


def check_diversity(name: str) -> None:
    """One-line error naming the choices when ``name`` is not a registered diversity method."""
    REGISTRY.get(name)


def diverse_select(
    method: str,
    x: np.ndarray,
    u: np.ndarray,
    k: int,
    cfg: DiversitySettings,
    *,
    labeled_x: np.ndarray | None = None,
    seed: int,
) -> np.ndarray:
    """``k`` distinct candidate positions chosen by ``method`` (a name in :data:`DIVERSITY`)."""
    if len(x) != len(u):
        raise ValueError(f"{len(x)} candidate embeddings but {len(u)} priorities")
    check_diversity(method)
    return DIVERSITY[method](x, u, int(min(k, len(u))), labeled_x, seed, cfg)


__all__ = ["DIVERSITY", "Diversity", "check_diversity", "diverse_select", "register", "registry"]
