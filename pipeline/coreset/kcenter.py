"""k-center greedy (farthest-point) coresets: exact, stratified (sampled candidates), helpers.

The k-center objective picks ``S`` (|S| = k) minimising the covering radius

    r(S) = max_i min_{s in S} d(x_i, x_s),

and the greedy 2-approximation repeatedly adds ``argmax_i m_i`` where ``m_i = min_{s in S} d(x_i, x_s)``
is kept as a vector and updated after each pick with one vectorised distance computation:

    m <- min(m, d(X, x_new)),   d^2(X, c) = ||x||^2 - 2 X c + ||c||^2   (metric="l2")
                                d(X, c)   = 1 - X_hat c_hat              (metric="cosine")

``m`` starts at +inf (not a constant such as 1000, which is wrong for large norms). Selected
points are set to -inf so they are never picked twice (duplicates of selected points, at
distance 0, can still be picked when nothing else is left). Everything runs in torch on
``device`` ("cpu" or "cuda").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

Metric = Literal["l2", "cosine"]
Start = int | Literal["farthest_from_mean", "random"] | None


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when a GPU is visible, else "cpu"; anything else unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _as_tensor(x: np.ndarray | torch.Tensor, metric: Metric, device: str) -> torch.Tensor:
    """(N, D) float32 tensor on ``device``; rows L2-normalised for the cosine metric."""
    if metric not in ("l2", "cosine"):
        raise ValueError(f"metric must be 'l2' or 'cosine', got {metric!r}")
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        # Arrow-backed arrays are read-only; torch needs a writable buffer (copy only then).
        x = x if x.flags.writeable else np.array(x, dtype=np.float32)
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"x must be 2-D (N, D), got shape {tuple(t.shape)}")
    t = t.to(device=resolve_device(device), dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise ValueError("x contains NaN or inf")
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1)
    return t.contiguous()


def _to_distance(d: torch.Tensor | float, metric: Metric) -> float:
    """Internal score (squared L2, or 1 - cos) -> reported distance (L2, or 1 - cos)."""
    v = max(float(d), 0.0)
    return float(np.sqrt(v)) if metric == "l2" else v


def _min_score_to_set(xq: torch.Tensor, centers: torch.Tensor, metric: Metric, block_rows: int = 8192) -> torch.Tensor:
    """(Q,) min over ``centers`` of squared L2 (or 1 - cos) for each query row; +inf if no centers.

    Blocked GEMM: memory stays ~block_rows x block_rows floats.
    """
    out = torch.full((xq.shape[0],), float("inf"), device=xq.device)
    if centers.shape[0] == 0:
        return out
    c_sq = (centers * centers).sum(1) if metric == "l2" else None
    for q0 in range(0, xq.shape[0], block_rows):
        q = xq[q0 : q0 + block_rows]
        q_sq = (q * q).sum(1, keepdim=True) if metric == "l2" else None
        best = out[q0 : q0 + block_rows]
        for c0 in range(0, centers.shape[0], block_rows):
            dots = q @ centers[c0 : c0 + block_rows].T
            if metric == "l2":
                score = q_sq - 2 * dots + c_sq[c0 : c0 + block_rows]
            else:
                score = 1 - dots
            torch.minimum(best, score.min(1).values, out=best)
    return out


def min_distance_to_set(
    x: np.ndarray | torch.Tensor,
    centers_idx: Sequence[int] | np.ndarray,
    *,
    metric: Metric,
    device: str,
    query_idx: np.ndarray | None = None,
) -> np.ndarray:
    """Distance of each row of ``x`` (or of ``x[query_idx]``) to its nearest row in ``x[centers_idx]``."""
    xt = _as_tensor(x, metric, device)
    centers = xt[torch.as_tensor(np.asarray(centers_idx, dtype=np.int64), device=xt.device)]
    q = xt if query_idx is None else xt[torch.as_tensor(np.asarray(query_idx, dtype=np.int64), device=xt.device)]
    score = _min_score_to_set(q, centers, metric).clamp_min_(0)
    return (score.sqrt() if metric == "l2" else score).cpu().numpy()


def covering_radius(
    x: np.ndarray | torch.Tensor,
    selected: Sequence[int] | np.ndarray,
    *,
    metric: Metric,
    device: str,
    sample: int | None = None,
    seed: int | None = None,
) -> float:
    """r(S) = max_i min_{s in S} d(x_i, x_s); over a random ``sample`` of rows if given (a lower bound,
    drawn with ``seed``)."""
    if len(selected) == 0:
        raise ValueError("covering radius of an empty selection is undefined")
    query = None
    if sample is not None and sample < len(x):
        if seed is None:
            raise ValueError("covering_radius over a sample needs a seed (same input + seed = same radius)")
        query = np.random.default_rng(seed).choice(len(x), size=sample, replace=False)
    return float(min_distance_to_set(x, selected, metric=metric, device=device, query_idx=query).max())


def _check_selection(n: int, k: int, already_selected: Sequence[int] | np.ndarray | None) -> np.ndarray:
    already = np.unique(np.asarray([] if already_selected is None else already_selected, dtype=np.int64))
    if already.size and (already.min() < 0 or already.max() >= n):
        raise IndexError(f"already_selected holds indices outside [0, {n})")
    if not 0 <= k <= n - already.size:
        raise ValueError(f"k={k} must be in [0, {n - already.size}] (N={n}, already selected={already.size})")
    return already


def _first_pick(xt: torch.Tensor, start: Start, seed: int | None) -> int:
    n = xt.shape[0]
    if start is None or start == "farthest_from_mean":
        return int(((xt - xt.mean(0)) ** 2).sum(1).argmax())
    if start == "random":
        return int(np.random.default_rng(seed).integers(n))
    if isinstance(start, (int, np.integer)) and 0 <= int(start) < n:
        return int(start)
    raise ValueError(f"start must be an index in [0, {n}), 'farthest_from_mean' or 'random'; got {start!r}")


def k_center_greedy(
    x: np.ndarray | torch.Tensor,
    k: int,
    *,
    start: Start = None,
    already_selected: Sequence[int] | np.ndarray | None = None,
    metric: Metric,
    device: str,
    seed: int | None = None,
) -> tuple[np.ndarray, float]:
    """Exact greedy k-center over all N points: O(k N D), one matrix-vector product per pick.

    Args:
        x: (N, D) points.
        k: number of new points to pick.
        start: first pick when nothing is already selected: an index, "farthest_from_mean"
            (default) or "random" (uses ``seed``).
        already_selected: indices that count as centers but are not returned (e.g. a labelled set);
            when given, the first pick is the point farthest from them and ``start`` is ignored.
        metric: "l2" (Euclidean) or "cosine" (1 - cosine similarity).
        device: torch device, or "auto" (CUDA when present).

    Returns:
        (indices (k,) int64 in pick order, covering radius of ``already_selected`` + picks over all N).
    """
    xt = _as_tensor(x, metric, device)
    device = str(xt.device)
    n = xt.shape[0]
    already = _check_selection(n, k, already_selected)
    sq = (xt * xt).sum(1) if metric == "l2" else None
    if already.size:
        min_score = _min_score_to_set(xt, xt[torch.as_tensor(already, device=device)], metric)
        min_score[torch.as_tensor(already, device=device)] = -float("inf")
        first = None
    else:
        min_score = torch.full((n,), float("inf"), device=device)
        first = _first_pick(xt, start, seed) if k else None
    picks = np.empty(k, dtype=np.int64)
    score = torch.empty(n, device=device)
    for t in range(k):
        i = first if (t == 0 and first is not None) else int(torch.argmax(min_score))
        picks[t] = i
        torch.mv(xt, xt[i], out=score)
        if metric == "l2":
            score.mul_(-2).add_(sq).add_(sq[i])
        else:
            score.neg_().add_(1)
        torch.minimum(min_score, score, out=min_score)
        min_score[i] = -float("inf")
    # No center at all: radius +inf; every point a center: 0.
    radius = _to_distance(min_score.max(), metric) if n > k + already.size else 0.0
    return picks, radius


def stratified_k_center(
    x: np.ndarray | torch.Tensor,
    k: int,
    *,
    sample_size: int,
    resample_every: int,
    random_fraction: float,
    bound_centers: int,
    start: Start = None,
    already_selected: Sequence[int] | np.ndarray | None = None,
    metric: Metric,
    device: str,
    seed: int,
    radius_sample: int | None,
) -> tuple[np.ndarray, float]:
    """Greedy k-center over a candidate sample refreshed every ``resample_every`` picks.

    Each pick takes the candidate farthest from the chosen set; candidate distances are exact
    and updated per pick on ``sample_size`` rows instead of N. A refresh draws
    ``random_fraction * sample_size`` fresh random unselected points (the paper's stratified
    sample) plus the rest from the points with the largest *upper bound* u_i >= m_i, and computes
    their exact distance to the whole chosen set with one blocked GEMM. The bounds come from
    exact distances to the first ``bound_centers`` picks (updated by GEMM at doubling checkpoints)
    and from every later exact evaluation; they steer candidates toward sparse, still uncovered
    regions that a uniform sample misses (uniform sampling alone covers outliers poorly).

    Cost ~ N * bound_centers * D (bounds) + (k / resample_every) * sample_size * k * D (refreshes)
    + k * sample_size * D (picks), against k * N * D for :func:`k_center_greedy`.

    Returns:
        (indices (k,) int64, covering radius over ``radius_sample`` random rows: a lower bound of the
        true radius; ``radius_sample=None`` uses all N rows, as costly as one N x k pass).
    """
    if sample_size < 1 or resample_every < 1 or not 0.0 <= random_fraction <= 1.0:
        raise ValueError("need sample_size >= 1, resample_every >= 1, 0 <= random_fraction <= 1")
    xt = _as_tensor(x, metric, device)
    n = xt.shape[0]
    already = _check_selection(n, k, already_selected)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, dtype=bool)
    selected: list[int] = list(already)
    picks: list[int] = []
    if not already.size and k:
        picks.append(_first_pick(xt, start, seed))
        selected.append(picks[0])
    chosen[selected] = True

    neg_inf = -float("inf")
    upper = torch.full((n,), float("inf"), device=xt.device)
    bounded = 0  # selected[:bounded] are already folded into ``upper``
    next_checkpoint = max(len(selected), 1)
    cand = np.empty(0, dtype=np.int64)
    cand_x, cand_score = xt[:0], torch.empty(0, device=xt.device)
    since_refresh = resample_every
    while len(picks) < k:
        if since_refresh >= resample_every or not bool((cand_score > neg_inf).any()):
            if len(cand):
                upper[torch.as_tensor(cand, device=xt.device)] = cand_score
            if len(selected) >= next_checkpoint and bounded < bound_centers:
                new = torch.as_tensor(selected[bounded:bound_centers], device=xt.device)
                torch.minimum(upper, _min_score_to_set(xt, xt[new], metric), out=upper)
                bounded = min(len(selected), bound_centers)
                next_checkpoint = 2 * len(selected)
            upper[torch.as_tensor(np.asarray(selected, dtype=np.int64), device=xt.device)] = neg_inf
            cand = _draw_candidates(upper, chosen, sample_size, random_fraction, rng)
            cand_x = xt[torch.as_tensor(cand, device=xt.device)]
            sel = xt[torch.as_tensor(np.asarray(selected, dtype=np.int64), device=xt.device)]
            cand_score = _min_score_to_set(cand_x, sel, metric)
            since_refresh = 0
        j = int(torch.argmax(cand_score))
        i = int(cand[j])
        picks.append(i)
        selected.append(i)
        chosen[i] = True
        if metric == "l2":
            score = (cand_x - xt[i]).pow_(2).sum(1)
        else:
            score = 1 - cand_x @ xt[i]
        torch.minimum(cand_score, score, out=cand_score)
        cand_score[j] = neg_inf
        since_refresh += 1

    out = np.asarray(picks, dtype=np.int64)
    if n == len(selected) or not selected:
        return out, 0.0 if selected else float("inf")
    return out, covering_radius(xt, selected, metric=metric, device=device, sample=radius_sample, seed=seed)


def _draw_candidates(
    upper: torch.Tensor, chosen: np.ndarray, sample_size: int, random_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``sample_size`` distinct unselected indices: the largest upper bounds + uniform random ones."""
    n_free = int((~chosen).sum())
    size = min(sample_size, n_free)
    n_top = size - int(round(random_fraction * size))
    top = torch.topk(upper, n_top).indices.cpu().numpy() if n_top else np.empty(0, dtype=np.int64)
    taken = chosen.copy()
    taken[top] = True
    want = size - len(top)
    if 4 * (n_free - len(top)) < len(taken):
        fresh = rng.choice(np.flatnonzero(~taken), size=want, replace=False)
    else:
        # Rejection sampling: O(sample_size) while most of the pool is still free.
        fresh = np.empty(0, dtype=np.int64)
        while len(fresh) < want:
            draw = np.unique(rng.integers(len(taken), size=2 * (want - len(fresh)) + 16))
            draw = draw[~taken[draw]]
            rng.shuffle(draw)
            draw = draw[: want - len(fresh)]
            taken[draw] = True
            fresh = np.concatenate([fresh, draw])
    return np.concatenate([top, fresh]).astype(np.int64)
