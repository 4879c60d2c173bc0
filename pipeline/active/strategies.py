"""Selection strategies: turn class probabilities into a priority per unlabeled image.

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
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("least_confidence", "margin", "entropy", "random", "gaussian", "positive")


def as_class_probs(p: np.ndarray) -> np.ndarray:
    """(N,) positive probabilities -> (N, 2) ``[1 - p, p]``; (N, C) rows are checked and returned."""
    p = np.asarray(p, dtype=np.float32)
    if p.ndim == 1:
        return np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N,) or (N, C>=2), got shape {p.shape}")
    return p


def _check(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float32)
    if p.size and (not np.isfinite(p).all() or p.min() < -1e-6 or p.max() > 1 + 1e-6):
        raise ValueError("probabilities must be finite and in [0, 1]")
    return p


def least_confidence(p: np.ndarray) -> np.ndarray:
    """u = 1 - max_c p_c."""
    return 1.0 - as_class_probs(_check(p)).max(axis=1)


def margin(p: np.ndarray) -> np.ndarray:
    """u = 1 - (p_(1) - p_(2)): small gap between the two likeliest classes = uncertain."""
    q = as_class_probs(_check(p))
    if q.shape[1] == 2:
        return 1.0 - np.abs(q[:, 1] - q[:, 0])
    top2 = -np.partition(-q, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def entropy(p: np.ndarray) -> np.ndarray:
    """u = -sum_c p_c log p_c (natural log; 0 log 0 = 0)."""
    q = as_class_probs(_check(p)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * np.log(q), 0.0)
    return (-terms.sum(axis=1)).astype(np.float32)


def positive_probability(p: np.ndarray) -> np.ndarray:
    p = _check(p)
    return p if p.ndim == 1 else p[:, 1]


def gaussian_weights(p: np.ndarray, sigma: float = 0.1) -> np.ndarray:
    """w = exp(-(p - 0.5)^2 / (2 sigma^2)): the N(0.5, sigma) density up to a constant."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    d = positive_probability(p).astype(np.float64) - 0.5
    return np.exp(-d * d / (2.0 * sigma * sigma))


def priority(strategy: str, p: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """(N,) float64 priority of every image under ``strategy`` (see module docstring)."""
    if strategy == "least_confidence":
        return least_confidence(p).astype(np.float64)
    if strategy == "margin":
        return margin(p).astype(np.float64)
    if strategy == "entropy":
        return entropy(p).astype(np.float64)
    if strategy == "positive":
        return positive_probability(p).astype(np.float64)
    n = len(p)
    if strategy == "random":
        return rng.random(n)
    if strategy == "gaussian":
        w = gaussian_weights(p, sigma)
        u = rng.random(n)
        with np.errstate(divide="ignore"):
            return np.log(u) / np.maximum(w, 1e-300)
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")


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
