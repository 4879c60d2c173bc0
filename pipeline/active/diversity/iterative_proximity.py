"""``iterative_proximity``: picks in blocks; before each block the score is

    a_i = u_hat_i - lambda * max(0, max_{j picked} cos(x_i, x_j)),   u_hat = (u - min u) / (max u - min u),

so candidates close to an already-picked image drop down (``block_size``, ``penalty`` = lambda).
"""

from __future__ import annotations

import numpy as np

from pipeline.active.diversity import DiversitySettings, register
from pipeline.active.strategies.base import top_k


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32; zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def iterative_proximity(x: np.ndarray, u: np.ndarray, k: int, block_size: int, penalty: float) -> np.ndarray:
    """Block-wise picks with the proximity penalty of the module docstring."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    xn = unit_rows(x)
    u = np.asarray(u, dtype=np.float64)
    span = u.max() - u.min() if len(u) else 0.0
    u_hat = (u - u.min()) / span if span > 0 else np.zeros_like(u)
    closeness = np.zeros(len(u))
    free = np.ones(len(u), dtype=bool)
    picks: list[np.ndarray] = []
    taken = 0
    while taken < k:
        adjusted = np.where(free, u_hat - penalty * closeness, -np.inf)
        block = top_k(adjusted, min(block_size, k - taken))
        picks.append(block)
        free[block] = False
        taken += len(block)
        closeness = np.maximum(closeness, (xn @ xn[block].T).max(axis=1))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


@register("iterative_proximity")
def iterative_proximity_method(
    x: np.ndarray, u: np.ndarray, k: int, labeled_x: np.ndarray | None, seed: int, cfg: DiversitySettings
) -> np.ndarray:
    return iterative_proximity(x, u, k, block_size=cfg.block_size, penalty=cfg.penalty)
