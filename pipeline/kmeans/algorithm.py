"""k-means on sharded data: k-means++ / random init and Lloyd, written once for any shard group.

The driver holds only centroid-sized state. Per Lloyd iteration it puts the centroids (k, D) in
the object store, every shard returns its per-cluster sums (k, D), counts (k,) and inertia, and
the driver reduces::

    c_j <- sum_{x in C_j} x / |C_j|          (cosine: then c_j <- c_j / ||c_j||)

Empty clusters (``|C_j| = 0``) are re-seeded with the points farthest from their centroids
(global top-m over the shards' local top-m), as scikit-learn's Lloyd does; they are never left
as duplicates nor crash.

k-means++ (greedy, Arthur & Vassilvitskii 2007, with ``2 + ln k`` local trials like scikit-learn):
the min-distances ``D(x)`` stay in the shards; per new centre the driver draws the trial
thresholds ``r ~ U(0, sum_x D(x))``, the shard owning each threshold returns that candidate
vector, every shard returns ``phi_j = sum_x min(D(x), ||x - c_j||^2)`` per candidate, and the
driver keeps ``argmin_j phi_j``. Three round trips of scalars/candidate vectors per centre; no
N-length vector ever leaves a shard.

``init="auto"`` bounds the seeding cost: greedy k-means++ on all ``n`` active rows costs
``2 n k t D`` flops (``t`` trials); above ``init_sample_flops`` it runs instead on a uniform sample
of ``m = init_sample_flops / (2 k t D)`` rows gathered into the driver (centroid-sized: a few
times ``k`` rows at most), which also saves the ``3 k`` round trips. When ``m <= k`` k-means++
would just pick every sampled row, so the init is then ``k`` uniform rows: the random init that
``faiss.Kmeans`` uses (large k, where Lloyd from random rows loses little; BENCHMARKS.md).

Every long loop reports through ``progress(phase, done, total, **metrics)`` (``phase``: ``init``
per centre, ``lloyd`` per iteration) so that a step shows progress and an ETA while it runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipeline.kmeans.shard import Shard

ProgressFn = Callable[..., None]  # progress(phase, done, total, **metrics)


def _no_progress(phase: str, done: int, total: int, **metrics: Any) -> None:
    """Default progress sink: nothing reported."""


class LocalGroup:
    """Shards living in this process (tests, upper levels, the single-process API)."""

    def __init__(self, shards: Sequence[Shard]):
        self.shards = list(shards)

    def __len__(self) -> int:
        return len(self.shards)

    def call(self, method: str, *args: Any) -> list:
        """``method(*args)`` on every shard; results in shard order."""
        return [getattr(s, method)(*args) for s in self.shards]

    def call_each(self, method: str, args_per_shard: dict[int, tuple]) -> dict[int, Any]:
        """``method(*args_per_shard[i])`` on the listed shards only."""
        return {i: getattr(self.shards[i], method)(*a) for i, a in args_per_shard.items()}

    def wait_alive(self, timeout: float = 0.0) -> None:
        """In-process shards cannot be lost."""

    def close(self) -> None:
        for s in self.shards:
            s.close()
        self.shards = []


class ShardLost(RuntimeError):
    """A shard actor died during a call; its state (offset, active set, assignment) is gone."""


def is_actor_loss(exc: BaseException) -> bool:
    """Whether ``exc`` (possibly a task error wrapping it) means a Ray actor died."""
    import ray

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (ray.exceptions.RayActorError, ShardLost)):
            return True
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    return False


class RayGroup:
    """Shards living in Ray actors; large arguments are put in the object store once per call.

    A call that finds an actor dead raises :class:`ShardLost`; with ``max_restarts`` on the actors,
    Ray restarts them (re-running the constructor, which reloads the shard's rows) and the caller
    restores their state and recomputes the interrupted step.
    """

    def __init__(self, actors: Sequence[Any]):
        import ray

        self._ray = ray
        self.actors = list(actors)

    def __len__(self) -> int:
        return len(self.actors)

    def _put(self, args: tuple) -> tuple:
        return tuple(self._ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 65536 else a for a in args)

    def _get(self, refs: list) -> list:
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayActorError as exc:
            raise ShardLost(f"a k-means shard actor died: {exc}") from exc

    def call(self, method: str, *args: Any) -> list:
        args = self._put(args)
        return self._get([getattr(a, method).remote(*args) for a in self.actors])

    def call_each(self, method: str, args_per_shard: dict[int, tuple]) -> dict[int, Any]:
        keys = list(args_per_shard)
        refs = [getattr(self.actors[i], method).remote(*args_per_shard[i]) for i in keys]
        return dict(zip(keys, self._get(refs)))

    def wait_alive(self, timeout: float = 300.0) -> None:
        """Block until every actor answers (restarted ones have reloaded their rows).

        Raises ``ShardLost`` when an actor is dead for good (restarts exhausted) or ``timeout`` passes.
        """
        import time

        deadline = time.monotonic() + timeout
        for i, actor in enumerate(self.actors):
            while True:
                try:
                    self._ray.get(actor.size.remote(), timeout=max(1.0, deadline - time.monotonic()))
                    break
                except self._ray.exceptions.ActorUnavailableError:  # restarting: try again
                    if time.monotonic() > deadline:
                        raise ShardLost(f"shard actor {i} did not come back within {timeout:.0f} s") from None
                    time.sleep(0.5)
                except (self._ray.exceptions.RayActorError, self._ray.exceptions.GetTimeoutError) as exc:
                    raise ShardLost(f"shard actor {i} is gone: {exc}") from exc

    def close(self) -> None:
        """Ask every actor to delete its spilled rows (best effort), then kill it."""
        try:
            self._ray.get([a.close.remote() for a in self.actors], timeout=60)
        except Exception:  # noqa: BLE001 - a dead actor has nothing left to clean up here
            pass
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []


def _active_counts(group) -> np.ndarray:
    return np.asarray(group.call("n_active"), dtype=np.int64)


def _rows_at(group, positions: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Vectors of active rows at global active ``positions`` (in the given order)."""
    starts = np.concatenate([[0], np.cumsum(counts)])
    owner = np.searchsorted(starts, positions, side="right") - 1
    asks = {int(s): (positions[owner == s] - starts[s],) for s in np.unique(owner)}
    got = group.call_each("active_rows", asks)
    out = None
    for s, vecs in got.items():
        if out is None:
            out = np.empty((len(positions), vecs.shape[1]), dtype=np.float32)
        out[owner == s] = vecs
    return out


def random_init(group, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct active rows drawn uniformly without replacement."""
    counts = _active_counts(group)
    n = int(counts.sum())
    if k > n:
        raise ValueError(f"cannot pick {k} centroids from {n} points")
    return _rows_at(group, rng.choice(n, size=k, replace=False), counts)


def kmeans_plus_plus(
    group,
    k: int,
    rng: np.random.Generator,
    n_local_trials: int | None = None,
    progress: ProgressFn = _no_progress,
) -> np.ndarray:
    """Greedy k-means++ on a shard group; returns (k, D) float32 centroids.

    Centre ``c_1`` is uniform; each next centre is the best of ``n_local_trials`` (default
    ``2 + floor(ln k)``) candidates drawn with ``P(x) = D(x) / sum_y D(y)``, the one minimising the
    potential ``phi = sum_x min(D(x), ||x - c||^2)``.
    """
    counts = _active_counts(group)
    n = int(counts.sum())
    if k > n:
        raise ValueError(f"cannot pick {k} centroids from {n} points")
    trials = n_local_trials or 2 + int(math.log(k))
    progress("init", 0, k)  # the phase starts: its clock (rate, ETA) starts here
    first = _rows_at(group, np.array([rng.integers(n)]), counts)[0]
    centroids = np.empty((k, len(first)), dtype=np.float32)
    centroids[0] = first
    pots = np.asarray(group.call("pp_reset", first))
    for i in range(1, k):
        total = pots.sum()
        r = rng.random(trials) * total
        bounds = np.concatenate([[0.0], np.cumsum(pots)])
        owner = np.clip(np.searchsorted(bounds, r, side="right") - 1, 0, len(pots) - 1)
        # a shard with zero potential never owns a threshold (unless all are zero)
        owner = np.where(pots[owner] > 0, owner, int(np.argmax(pots)))
        asks = {int(s): (r[owner == s] - bounds[s],) for s in np.unique(owner)}
        got = group.call_each("pp_pick", asks)
        candidates = np.empty((trials, centroids.shape[1]), dtype=np.float32)
        for s, vecs in got.items():
            candidates[owner == s] = vecs
        phi = np.sum(group.call("pp_trial", candidates), axis=0)
        best = int(np.argmin(phi))
        centroids[i] = candidates[best]
        pots = np.asarray(group.call("pp_commit", best))
        progress("init", i + 1, k)
    return centroids


def pp_trials(k: int, n_local_trials: int | None) -> int:
    """k-means++ candidates per centre: ``n_local_trials``, else ``2 + floor(ln k)``."""
    return n_local_trials or 2 + int(math.log(max(k, 1)))


def init_sample_size(n: int, k: int, dim: int, trials: int, sample_flops: float) -> int:
    """Rows k-means++ runs on under ``init="auto"``: ``n`` while ``2 n k t D <= F``, else
    ``F / (2 k t D)``, and ``k`` (random init) when that is not more than ``k``."""
    per_row = 2.0 * k * max(trials, 1) * dim
    return n if n * per_row <= sample_flops else int(min(n, max(k, sample_flops // per_row)))


def sample_kmeans_plus_plus(
    group,
    k: int,
    rng: np.random.Generator,
    n_local_trials: int | None,
    sample_flops: float,
    progress: ProgressFn = _no_progress,
) -> np.ndarray:
    """``init="auto"``: greedy k-means++ on all active rows, or on a uniform sample (module docstring)."""
    counts = _active_counts(group)
    n = int(counts.sum())
    if k > n:
        raise ValueError(f"cannot pick {k} centroids from {n} points")
    dim = int(group.call("dim")[0])
    m = init_sample_size(n, k, dim, pp_trials(k, n_local_trials), sample_flops)
    if m >= n:
        return kmeans_plus_plus(group, k, rng, n_local_trials, progress)
    if m <= k:
        return random_init(group, k, rng)
    sample = _rows_at(group, np.sort(rng.choice(n, size=m, replace=False)), counts)
    local = LocalGroup([Shard(sample, metric="l2", out_of_core=False)])  # rows already normalised by their shards
    try:
        return kmeans_plus_plus(local, k, rng, n_local_trials, progress)
    finally:
        local.close()


def lloyd(
    group,
    centroids: np.ndarray,
    n_iters: int,
    metric: str,
    progress: ProgressFn = _no_progress,
    *,
    tol: float,
) -> tuple[np.ndarray, list[float]]:
    """Up to ``n_iters`` Lloyd iterations from ``centroids`` on the active rows; returns (centroids, inertias).

    ``inertias[t]`` is ``sum_x d(x, c_{a(x)})`` of the assignment made in iteration ``t``. With
    ``tol > 0`` it stops after iteration ``t >= 1`` once ``inertias[t-1] - inertias[t] <= tol
    inertias[t]`` (the centroids are still updated from that last assignment).
    """
    centroids = np.array(centroids, dtype=np.float32, copy=True)
    inertias: list[float] = []
    progress("lloyd", 0, n_iters)
    for t in range(n_iters):
        stats = group.call("lloyd_stats", centroids, t > 0)  # t > 0: the last assignment is a hint
        sums = np.sum([s[0] for s in stats], axis=0)
        counts = np.sum([s[1] for s in stats], axis=0)
        inertias.append(float(sum(s[2] for s in stats)))
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).astype(np.float32)
        empty = np.flatnonzero(~full)
        if len(empty):
            centroids[empty] = _farthest_points(group, len(empty))
        if metric == "cosine":
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        converged = tol > 0 and t > 0 and inertias[-2] - inertias[-1] <= tol * inertias[-1]
        progress("lloyd", n_iters if converged else len(inertias), n_iters, inertia=inertias[-1])
        if converged:
            break
    return centroids, inertias


def _farthest_points(group, m: int) -> np.ndarray:
    """The ``m`` active points farthest from their centroid (global, deterministic ties)."""
    parts = group.call("farthest", m)
    dist = np.concatenate([p[0] for p in parts]).astype(np.float64)
    gidx = np.concatenate([p[1] for p in parts])
    vecs = np.concatenate([p[2] for p in parts])
    order = np.lexsort((gidx, -dist))[:m]
    out = vecs[order]
    if len(out) < m:  # fewer active points than empty clusters: reuse the farthest ones
        out = np.resize(out, (m, vecs.shape[1]))
    return out


# kmeans.init: name -> init(group, k, rng, n_local_trials, init_sample_flops, progress) -> (k, D) centroids
InitFn = Callable[[Any, int, np.random.Generator, int | None, float, ProgressFn], np.ndarray]
INITIALISERS: dict[str, InitFn] = {
    "kmeans++": lambda group, k, rng, trials, _flops, progress: kmeans_plus_plus(group, k, rng, trials, progress),
    "auto": sample_kmeans_plus_plus,
    "random": lambda group, k, rng, *_: random_init(group, k, rng),
}


def fit_group(
    group,
    k: int,
    n_iters: int,
    *,
    init: str | np.ndarray,
    metric: str,
    rng: np.random.Generator,
    n_local_trials: int | None = None,
    init_sample_flops: float,
    progress: ProgressFn = _no_progress,
    tol: float,
) -> tuple[np.ndarray, list[float]]:
    """Initialise (a name of :data:`INITIALISERS` or given (k, D) centroids) then run Lloyd on the
    active rows (early stop: :func:`lloyd`'s ``tol``)."""
    if isinstance(init, np.ndarray):
        if init.shape[0] != k:
            raise ValueError(f"init centroids have {init.shape[0]} rows, expected k={k}")
        start = init.astype(np.float32)
        if metric == "cosine":
            start = start / np.maximum(np.linalg.norm(start, axis=1, keepdims=True), 1e-12)
    elif init in INITIALISERS:
        start = INITIALISERS[init](group, k, rng, n_local_trials, init_sample_flops, progress)
    else:
        raise ValueError(f"init must be one of {sorted(INITIALISERS)} or an array, got {init!r}")
    return lloyd(group, start, n_iters, metric, progress, tol=tol)


def kmeans(
    x: np.ndarray,
    k: int,
    n_iters: int,
    *,
    init: str | np.ndarray,
    metric: str,
    seed: int | np.random.Generator = 0,
    n_local_trials: int | None = None,
    chunk_mb: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Single-process k-means on (N, D) ``x`` (``init="auto"`` never samples here: it is k-means++;
    ``chunk_mb`` None: ``kmeans.chunk_mb`` of ``conf/kmeans``).

    Returns ``(centroids (k, D) float32, assignments (N,) int64, distances (N,) float32)`` where
    distances are squared L2 (``metric="l2"``) or ``1 - cos`` (``metric="cosine"``) to the
    assigned final centroid.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shard = Shard(x, metric=metric, chunk_mb=chunk_mb, out_of_core=False)
    group = LocalGroup([shard])
    fit = dict(init=init, metric=metric, rng=rng, n_local_trials=n_local_trials, init_sample_flops=math.inf)
    centroids, _ = fit_group(group, k, n_iters, **fit, tol=0.0)
    shard.assign_all(centroids)
    _, assign, dist = shard.assignments()
    shard.close()
    return centroids, assign, dist.copy()


def kmeans_plus_plus_init(
    x: np.ndarray, k: int, rng: np.random.Generator | int = 0, *, metric: str, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ seeding of (N, D) ``x``; returns (k, D) float32 centres (rows of ``x``)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return kmeans_plus_plus(LocalGroup([Shard(x, metric=metric, out_of_core=False)]), k, rng, n_local_trials)
