"""What every strategy shares: probabilities checked and as classes, and the top-k of a priority."""

from __future__ import annotations

import numpy as np


def as_class_probs(p: np.ndarray) -> np.ndarray:
    """(N,) positive probabilities -> (N, 2) ``[1 - p, p]``; (N, C) rows are checked and returned."""
    p = np.asarray(p, dtype=np.float32)
    if p.ndim == 1:
        return np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N,) or (N, C>=2), got shape {p.shape}")
    return p


def check_probs(p: np.ndarray) -> np.ndarray:
    """``p`` as float32, or a one-line error unless it is finite and in [0, 1]."""
    p = np.asarray(p, dtype=np.float32)
    if p.size and (not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError("probabilities must be finite and in [0, 1]")
    return p


def positive_probability(p: np.ndarray) -> np.ndarray:
    """(N,) positive-class probabilities of (N,) or (N, C) ``p`` (column 1)."""
    p = check_probs(p)
    return p if p.ndim == 1 else p[:, 1]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest scores, largest first; ties go to the lower position.

    O(N + k log k) with ``argpartition``, so a 1M pool costs one linear pass.
    """
    scores = np.asarray(scores)
    k = int(min(max(k, 0), len(scores)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        # Every score tied with the k-th largest joins the candidates, so ties resolve by position.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        cand = np.flatnonzero(scores >= kth)
    else:
        cand = np.arange(len(scores))
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]].astype(np.int64)
