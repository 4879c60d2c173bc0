"""Capacity plan of hierarchical k-means: memory per shard actor, actors, and time per level.

The model follows :class:`pipeline.kmeans.shard.Shard` and :mod:`pipeline.kmeans.hierarchical`:

- **Memory of one level-1 actor** holding ``r = N / actors`` rows of width ``D``:
  in memory ``r (4 D + ROW_BYTES_IN_MEMORY + 4 t) + C + 16 k D + s 4 D / actors + B``
  (rows, per-row arrays, the ``t = 2 + ln k`` k-means++ trial distances kept per row, chunk
  temporaries ``C`` (:func:`chunk_temporaries`), centroids / index / float64 sums, the resampling sample, the
  process baseline ``B``); out of core ``r ROW_STATE_BYTES + C' + 16 k D + B`` with ``C'`` the
  temporaries and read buffer of chunks of ``min(chunk_mb, (budget - r ROW_STATE_BYTES) / 3)``
  (the rows stay in the spill file).
- **Time of a level** on ``n`` points: step 0 seeds with k-means++ and runs ``iters`` Lloyd
  passes on all points, every resampling step the same on ``s = k sample_size`` points, and every
  step one full reassignment: ``P = n (iters + 1) + R (s iters + n)`` row assignments in
  ``I = (R + 1)(iters + 1)`` passes (an upper bound: Lloyd may stop early on ``kmeans.tol``). Exact assignment costs ``2 D k P`` flops at the measured Lloyd
  rate; HNSW assignment (``kmeans.assign``, large k) costs ``P h(k)`` seconds plus one graph build
  ``k b(k)`` per pass that rebuilds it (``(R + 1)(ceil(iters / hnsw_rebuild_every) + 1)``), with ``h`` and ``b`` measured per row / per centroid at ``k_0 = 4096`` and
  scaled by ``ln k / ln k_0`` (HNSW's logarithmic search). k-means++ costs ``2 D k t m`` flops on
  ``m`` rows per step (``init=auto``: ``m`` capped by ``init_sample_flops``; a sample is seeded in
  the driver on one thread), plus ``3 k`` Ray round trips when it runs on the actors (split mode:
  coarse ``k / n_splits`` on all points, then ``n_splits`` per coarse cluster).
- Level 1 runs on the actors (one per CPU, or per GPU with ``use_gpu``); upper levels cluster
  the previous level's centroids in the driver (on one GPU with ``use_gpu``).

Throughputs come from :func:`calibrate` (seconds on this machine), stored as JSON; the GPU rate
and the Ray round trip are assumed constants unless the calibration file says otherwise.
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engine import Engine, select_engine
from pipeline.kmeans.config import KMeansConfig
from pipeline.kmeans.shard import ROW_STATE_BYTES
from pipeline.kmeans.sizes import MIN_POINTS_PER_CLUSTER, embedding_dim, row_counts

# In memory, per row besides the row itself: squared norm, assignment (int32), distance, fit
# distance, fit assignment (the HNSW hint), k-means++ D(x) (4 bytes each) and the sort temporaries
# of a finished step (int64 order, float64 keys, int64 global index).
ROW_BYTES_IN_MEMORY = 6 * 4 + 24
# Assumed, not measured here (no GPU on the dev VM): FAISS flat search on one A100/H100-class GPU
# in float32, about half of its fp32 peak; and one Ray actor round trip on a cluster.
ASSUMED_GPU_GFLOPS = 20_000.0
ASSUMED_RAY_CALL_S = 0.002
HNSW_CAL_K = 4096  # centroids of the HNSW calibration
DEFAULT_CALIBRATION = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "strata" / "calibration.json"


def input_size(path: str, column: str = "embedding") -> tuple[int, int]:
    """(rows, width) of embeddings in a ``.npy`` (header) or Parquet files (footers and schema)."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.io.tables import list_parquet_files

    if str(path).endswith(".npy"):
        with fsspec.open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read(fh)[0]
        if len(shape) != 2:
            raise ValueError(f"input.path={path}: expected an (N, D) array, got shape {shape}")
        return int(shape[0]), int(shape[1])
    files = list_parquet_files(path)
    if not files:
        raise ValueError(f"input.path={path}: no Parquet files")
    with fsspec.open(files[0], "rb") as fh:
        pf = pq.ParquetFile(fh)
        if column not in pf.schema_arrow.names:
            raise ValueError(f"input.path={path}: no column {column!r} (has {pf.schema_arrow.names})")
        kind = pf.schema_arrow.field(column).type
        if pa.types.is_fixed_size_list(kind):
            dim = int(kind.list_size)
        else:
            first = next(pf.iter_batches(batch_size=1, columns=[column]), None)
            dim = 0 if first is None or not first.num_rows else len(first.column(0)[0])
    return int(sum(row_counts(files))), dim


@dataclass(frozen=True)
class Resources:
    """Homogeneous nodes: CPUs, GPUs and memory (GiB) per node."""

    nodes: int
    cpus: float
    gpus: float
    memory_gb: float
    source: str = "given"

    @classmethod
    def from_ray(cls) -> Resources:
        """The connected Ray cluster's totals, split evenly over its alive nodes."""
        import ray

        total = ray.cluster_resources()
        nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
        return cls(
            nodes,
            total.get("CPU", 0) / nodes,
            total.get("GPU", 0) / nodes,
            total.get("memory", 0) / nodes / 2**30,
            "ray.cluster_resources()",
        )

    @classmethod
    def this_machine(cls) -> Resources:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        return cls(1, float(os.cpu_count() or 1), 0.0, mem, "this machine")


@dataclass
class Calibration:
    """Measured throughputs of one thread at width ``dim`` (GFLOP/s), and the assumed constants."""

    dim: int
    lloyd_gflops_per_thread: float
    kmeanspp_gflops_per_thread: float
    baseline_mb: float
    gpu_gflops: float = ASSUMED_GPU_GFLOPS
    gpu_assumed: bool = True
    ray_call_s: float = ASSUMED_RAY_CALL_S
    measured: dict[str, Any] = field(default_factory=dict)
    hnsw_search_s_per_row: float | None = None  # at HNSW_CAL_K centroids, one thread (None: not measured)
    hnsw_build_s_per_centroid: float | None = None

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> Calibration:
        """From a stored entry, ignoring keys another version of this class wrote."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})

    def hnsw_seconds(self, k: int, rows: float, passes: float, threads: float, m: int, ef: int) -> float:
        """HNSW assignment of ``rows`` rows in ``passes`` passes: ``rows h(k) / threads + passes k b(k)``.

        Without a measurement, ``h`` is estimated as ``2 D ef M`` flops at a fifth of the Lloyd rate
        (graph search is not GEMM) and ``b`` as ``efConstruction / ef`` times that."""
        scale = math.log(max(k, 2)) / math.log(HNSW_CAL_K)
        if self.hnsw_search_s_per_row is not None and self.hnsw_build_s_per_centroid is not None:
            h, b = self.hnsw_search_s_per_row, self.hnsw_build_s_per_centroid
        else:
            h = 2 * self.dim * ef * m / (self.lloyd_gflops_per_thread * 1e9 / 5)
            b = h * 40 / ef
        return rows * h * scale / max(threads, 1) + passes * k * b * scale


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calibrate(dim: int, k: int = 256, flops: float = 50_000 * 64 * 256 * 2, seed: int = 0) -> Calibration:
    """Time one :meth:`Shard.lloyd_stats` (k=256) and one k-means++ (k=32) on one thread.

    Rows ``n = flops / (2 D k)`` (50,000 at D=64), at least 2,000: a few seconds at most.
    """
    from pipeline.kmeans.algorithm import LocalGroup, kmeans_plus_plus
    from pipeline.kmeans.shard import Shard

    baseline = _rss_mb()
    n = max(2_000, int(flops / (2 * dim * k)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    shard = Shard(x, metric="l2", threads=1, out_of_core=False)
    centroids = x[rng.choice(n, k, replace=False)]
    shard.lloyd_stats(centroids)  # warm-up: first touch, FAISS buffers
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        shard.lloyd_stats(centroids)
        best = min(best, time.perf_counter() - t0)
    k_pp = 32
    trials = 2 + int(math.log(k_pp))
    t0 = time.perf_counter()
    kmeans_plus_plus(LocalGroup([shard]), k_pp, np.random.default_rng(seed))
    t_pp = time.perf_counter() - t0
    build_s, search_s = _time_hnsw(n, dim, rng)
    return Calibration(
        dim=dim,
        lloyd_gflops_per_thread=2 * n * dim * k / best / 1e9,
        kmeanspp_gflops_per_thread=2 * n * dim * k_pp * trials / t_pp / 1e9,
        baseline_mb=baseline,
        measured={"n": n, "k": k, "lloyd_s": best, "kmeanspp_k": k_pp, "kmeanspp_s": t_pp, "at": time.time()},
        hnsw_search_s_per_row=search_s / n,
        hnsw_build_s_per_centroid=build_s / HNSW_CAL_K,
    )


def _time_hnsw(n: int, dim: int, rng: np.random.Generator) -> tuple[float, float]:
    """(seconds to build, seconds to search ``n`` rows) of the default HNSW over ``HNSW_CAL_K``
    centroids on one thread. Data: a mixture of 4,096 Gaussians (unit centres, noise 0.5), centroids
    drawn from its rows, as in a Lloyd iteration; i.i.d. Gaussian rows would be HNSW's worst case,
    far from real embeddings (measured: 2x slower)."""
    import faiss

    from pipeline.config import load_group

    conf = load_group("kmeans/default")
    mu = rng.standard_normal((4096, dim), dtype=np.float32)
    x = mu[rng.integers(4096, size=n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    centroids = x[rng.choice(n, HNSW_CAL_K, replace=n < HNSW_CAL_K)]
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(dim, int(conf["hnsw_m"]))
        index.hnsw.efConstruction = int(conf["hnsw_ef_construction"])
        index.add(np.ascontiguousarray(centroids))
        build = time.perf_counter() - t0
        index.hnsw.efSearch = int(conf["hnsw_ef_search"])
        t0 = time.perf_counter()
        index.search(x, 1)
        search = time.perf_counter() - t0
    finally:
        faiss.omp_set_num_threads(threads)
    return build, search


def load_calibration(path: str | Path, dim: int, recalibrate: bool) -> tuple[Calibration, bool]:
    """The stored calibration for width ``dim`` from the JSON at ``path`` (keyed by width), else a
    fresh one, stored there. Returns (calibration, whether it was measured now)."""
    path = Path(path).expanduser()
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan.calibration={path}: not JSON ({exc}); delete it to recalibrate") from exc
    if not recalibrate and str(dim) in stored:  # one stored before the HNSW rates: estimated (hnsw_seconds)
        return Calibration.from_json(stored[str(dim)]), False
    cal = calibrate(dim)
    stored[str(dim)] = asdict(cal)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stored, indent=1))
    tmp.replace(path)
    return cal, True


@dataclass(frozen=True)
class LevelPlan:
    level: int
    k: int
    n_points: int
    actors: int  # 0: in the driver
    rows_per_actor: int
    memory_per_actor: float  # bytes
    out_of_core: bool
    seconds: float
    gflop: float

    @property
    def points_per_cluster(self) -> float:
        return self.n_points / self.k


@dataclass
class Plan:
    n_points: int
    dim: int
    resources: Resources
    levels: list[LevelPlan]
    warnings: list[str]
    device: str  # "cpu" | "gpu"

    @property
    def seconds(self) -> float:
        return sum(lv.seconds for lv in self.levels)


def n_actors(kc: KMeansConfig, res: Resources) -> int:
    """Level-1 actors as :func:`pipeline.kmeans.run._n_actors`: ``kmeans.n_actors``, else one per
    CPU (per GPU with ``use_gpu``) of the whole cluster."""
    if kc.n_actors:
        return int(kc.n_actors)
    return max(1, int(res.nodes * (res.gpus if kc.use_gpu else res.cpus)))


def chunk_temporaries(chunk_bytes: float, rows: int, dim: int, k: int, trials: int, out_of_core: bool) -> float:
    """Peak temporaries of one chunk: ``b_w = clip(chunk_bytes / (8 (D + w + 4)), 256, rows)`` rows for
    width ``w`` (:meth:`Shard._rows`); Lloyd converts its block to float64 (``8 D b_k``) while FAISS
    tiles distances 4096 x min(k, 1024) float32; k-means++ keeps 3 (trials, b) float32 arrays.
    ``out_of_core``: plus the read buffer of ``b_1`` rows (``4 D b_1``)."""

    def block(width: int) -> int:
        return int(min(max(chunk_bytes // (8 * (dim + width + 4)), 256), max(rows, 1)))

    lloyd = 8 * dim * block(k) + 4 * 4096 * min(k, 1024)
    kmeanspp = 3 * 4 * trials * block(trials)
    return max(lloyd, kmeanspp) + (4 * dim * block(1) if out_of_core else 0)


def actor_memory(kc: KMeansConfig, rows: int, dim: int, k: int, sample_rows: int) -> tuple[float, bool]:
    """(bytes, out of core) of one shard holding ``rows`` rows; ``sample_rows``: its resampling sample."""
    from pipeline.kmeans.shard import resolve_out_of_core

    trials = pp_trials(kc, k)
    chunk = chunk_temporaries(kc.chunk_mb * 2**20, rows, dim, k, trials, False)
    centroid_bytes = 16 * k * dim  # centroids + FAISS index (float32) + float64 sums
    ooc = resolve_out_of_core(kc.out_of_core, rows, dim, kc.memory_budget_mb)
    if ooc:
        if kc.memory_budget_mb is not None:  # Shard: chunk_bytes = min(chunk_mb, free / 3)
            free = max(0.0, (kc.memory_budget_mb * 2**20 - rows * ROW_STATE_BYTES) / 3)
            chunk = chunk_temporaries(min(kc.chunk_mb * 2**20, free), rows, dim, k, trials, True)
        else:
            chunk = chunk_temporaries(kc.chunk_mb * 2**20, rows, dim, k, trials, True)
        return rows * ROW_STATE_BYTES + chunk + centroid_bytes, True
    per_row = 4 * dim + ROW_BYTES_IN_MEMORY + 4 * trials
    return rows * per_row + chunk + centroid_bytes + sample_rows * dim * 4, False


def pp_trials(kc: KMeansConfig, k: int) -> int:
    """k-means++ candidates per centre as :func:`pipeline.kmeans.algorithm.kmeans_plus_plus` draws
    them (0 with ``init=random``)."""
    return 0 if kc.init == "random" else kc.n_local_trials or 2 + int(math.log(max(k, 1)))


def level_flops(n: int, dim: int, k: int, iters: int, resampling: int, sample: int, splits: int, trials: int):
    """(Lloyd flops, k-means++ flops, k-means++ centres picked) of one level with exact assignment
    and k-means++ on all rows (module docstring)."""
    s = min(n, k * sample)
    if splits > 1:
        coarse = math.ceil(k / splits)
        lloyd0 = 2 * dim * n * (coarse + splits) * iters
        pp0, centres = 2 * dim * n * (coarse + splits) * trials, coarse
    else:
        lloyd0, pp0, centres = 2 * dim * n * k * iters, 2 * dim * n * k * trials, k
    lloyd = lloyd0 + 2 * dim * k * ((resampling + 1) * n + resampling * s * iters)
    pp = pp0 + 2 * dim * k * trials * resampling * s
    return float(lloyd), float(pp), centres + resampling * k


# ``in_process: auto`` keeps level 1 in the driver when its work is below 5e11 flops and its rows fit
# in 1 GiB; larger levels, and jobs on a cluster, use the actors. In process runs the shards one
# after another at ~26 GFLOP/s here (5e11: ~20 s); on actors the same work splits over the CPUs
# but first pays Ray's start (~10 s, unless an earlier step started it) and the actors' (~5 s):
# the two meet between 2.6e11 (Ray running) and 7.8e11 flops (BENCHMARKS.md, 'Start-up').
AUTO_IN_PROCESS_FLOP = 5e11
AUTO_IN_PROCESS_BYTES = 1 << 30


def level1_engine(kc: KMeansConfig, n_points: int, dim: int) -> Engine:
    """Where level 1 runs: :func:`pipeline.engine.select_engine` of ``kmeans.in_process`` (auto: the bounds above)."""
    lc = kc.levels[0]
    trials = pp_trials(kc, lc.n_clusters)
    lloyd, pp, _ = level_flops(
        n_points, dim, lc.n_clusters, lc.n_iters, lc.n_resampling_steps, lc.sample_size, lc.n_splits, trials
    )
    small = lloyd + pp <= AUTO_IN_PROCESS_FLOP and n_points * dim * 4 <= AUTO_IN_PROCESS_BYTES
    return select_engine(kc.in_process, small=small, what="kmeans.in_process")


def resolve_in_process(kc: KMeansConfig, n_points: int, dim: int) -> KMeansConfig:
    """``kc`` with ``in_process`` decided (``auto`` -> true/false by :func:`level1_engine`)."""
    import dataclasses

    return dataclasses.replace(kc, in_process=level1_engine(kc, n_points, dim).name == "local")


def level_seconds(
    kc: KMeansConfig, lc: Any, n: int, dim: int, cal: Calibration, threads: float, on_actors: bool, gpu: bool
) -> tuple[float, float]:
    """(seconds, GFLOP-equivalent) of one level under ``kc`` (module docstring: exact or HNSW
    assignment, k-means++ on all rows or on a sample); ``threads``: CPU threads working on it."""
    from pipeline.kmeans.algorithm import init_sample_size

    k, iters, r = lc.n_clusters, lc.n_iters, lc.n_resampling_steps
    trials = pp_trials(kc, k)
    lloyd, pp, centres = level_flops(n, dim, k, iters, r, lc.sample_size, lc.n_splits, trials)
    calls = 3 * centres * cal.ray_call_s if on_actors and trials else 0.0
    gpu_rate = cal.gpu_gflops * 1e9 * threads
    rate_lloyd = cal.lloyd_gflops_per_thread * 1e9 * max(threads, 1)
    rate_pp = gpu_rate if gpu else cal.kmeanspp_gflops_per_thread * 1e9 * max(threads, 1)
    ci, s = kc.centroid_index, min(n, k * lc.sample_size)
    if gpu:
        assign_s = lloyd / gpu_rate
    elif lc.n_splits == 1 and ci.uses_hnsw(k):
        # graph builds: every rebuild_every-th Lloyd iteration and the full reassignment of each step
        rows, passes = n * (iters + 1) + r * (s * iters + n), (r + 1) * (math.ceil(iters / ci.rebuild_every) + 1)
        assign_s = cal.hnsw_seconds(k, rows, passes, threads, ci.hnsw_m, ci.ef_search)
    else:
        assign_s = lloyd / rate_lloyd
    if kc.init == "auto" and lc.n_splits == 1 and trials:
        init_s = 0.0
        for m_all in [n] + [s] * r:
            m = init_sample_size(m_all, k, dim, trials, kc.init_sample_flops)
            if m >= m_all:  # greedy k-means++ on every row, where the rows are
                init_s += 2 * dim * k * trials * m / rate_pp + (3 * k * cal.ray_call_s if on_actors else 0.0)
            elif m > k:  # on a sample, in the driver, one CPU thread, no round trips (m <= k: random init)
                init_s += 2 * dim * k * trials * m / (cal.kmeanspp_gflops_per_thread * 1e9)
    else:
        init_s = pp / rate_pp + calls
    return assign_s + init_s, (lloyd + pp) / 1e9


def plan_kmeans(kc: KMeansConfig, n_points: int, dim: int, res: Resources, cal: Calibration) -> Plan:
    """Predict memory per actor, actors and time of every level; warnings for runs that would not fit."""
    kc = resolve_in_process(kc, n_points, dim)  # in_process=auto: small level 1s run in the driver
    gpu = bool(kc.use_gpu) and res.gpus > 0
    actors = n_actors(kc, res)
    node_bytes = res.memory_gb * 2**30
    baseline = cal.baseline_mb * 2**20
    levels, warnings = [], []
    n = n_points
    for i, lc in enumerate(kc.levels, start=1):
        k = lc.n_clusters
        on_actors = i == 1 and not kc.in_process
        shards = actors if i == 1 else 1
        rows = math.ceil(n / shards)
        sample_rows = math.ceil(min(n, k * lc.sample_size) / shards) if lc.n_resampling_steps else 0
        mem, ooc = actor_memory(kc, rows, dim, k, sample_rows)
        mem += baseline
        # the driver of a GPU run holds a GPU too (use_gpu reaches the upper levels' shard)
        threads = min(shards * kc.threads_per_actor, res.nodes * res.cpus) if on_actors else kc.threads_per_actor
        seconds, gflop = level_seconds(kc, lc, n, dim, cal, shards if gpu else threads, on_actors, gpu)
        levels.append(LevelPlan(i, k, n, shards if on_actors else 0, rows, mem, ooc, seconds, gflop))
        if n / k < MIN_POINTS_PER_CLUSTER:
            warnings.append(
                f"level {i}: {k} clusters for {n} points ({n / k:.1f} per cluster, < {MIN_POINTS_PER_CLUSTER}): "
                f"too few points per cluster; use fewer clusters (kmeans.n_clusters=auto)"
            )
        per_node = math.ceil(shards / res.nodes) if on_actors else 1
        where = "an actor" if on_actors else "the driver"
        if mem > node_bytes:
            warnings.append(
                f"level {i}: {where} needs {_size(mem)} but a node has {_size(node_bytes)}: use more actors, "
                f"out of core (kmeans.memory_budget_mb) or split mode (kmeans.n_splits)"
            )
        elif per_node * mem > node_bytes:
            warnings.append(
                f"level {i}: {per_node} actors per node need {_size(per_node * mem)} but a node has "
                f"{_size(node_bytes)}: use more nodes or out of core (kmeans.memory_budget_mb)"
            )
        n = k
    return Plan(n_points, dim, res, levels, warnings, "gpu" if gpu else "cpu")


def _size(b: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if b >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b / 2**10:.0f} KiB"


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def format_plan(plan: Plan, cal: Calibration) -> str:
    """The plan as a text table, its assumptions, and one line per warning."""
    r = plan.resources
    head = (
        f"k-means plan: N={plan.n_points:,} D={plan.dim} on {r.nodes} node(s) x {r.cpus:g} CPU, {r.gpus:g} GPU, "
        f"{r.memory_gb:.0f} GiB ({r.source}); level 1 on {plan.device.upper()}"
    )
    rows = [("level", "k", "points/cluster", "mem/actor", "actors", "mode", "GFLOP", "time")]
    for lv in plan.levels:
        rows.append(
            (
                str(lv.level),
                f"{lv.k:,}",
                f"{lv.points_per_cluster:,.1f}",
                _size(lv.memory_per_actor),
                f"{lv.actors:,}" if lv.actors else "driver",
                "out-of-core" if lv.out_of_core else "in-memory",
                f"{lv.gflop:,.0f}" if lv.gflop >= 10 else f"{lv.gflop:.2g}",
                _duration(lv.seconds),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    table = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    gpu = f"GPU {cal.gpu_gflops:,.0f} GFLOP/s ({'assumed' if cal.gpu_assumed else 'measured'})"
    notes = (
        f"total {_duration(plan.seconds)}; throughput per thread (measured, D={cal.dim}): Lloyd "
        f"{cal.lloyd_gflops_per_thread:.1f}, k-means++ {cal.kmeanspp_gflops_per_thread:.1f} GFLOP/s; {gpu}; "
        f"Ray round trip {cal.ray_call_s * 1e3:g} ms (assumed); HNSW "
        + (
            f"{cal.hnsw_search_s_per_row * 1e6:.0f} us a row, {cal.hnsw_build_s_per_centroid * 1e6:.0f} us a centroid "
            f"at k={HNSW_CAL_K} (measured)"
            if cal.hnsw_search_s_per_row is not None and cal.hnsw_build_s_per_centroid is not None
            else "estimated from the Lloyd rate (strata plan plan.recalibrate=true measures it)"
        )
    )
    return "\n".join([head, *table, notes, *(f"WARNING: {w}" for w in plan.warnings)])


LONG_RUN_S = 3600.0  # a plan longer than this is warned about before level 1 starts


def _scaled(kc: KMeansConfig, factor: float) -> KMeansConfig:
    """``kc`` with every level's k divided by ``factor`` (at least 2 apart between levels)."""
    import dataclasses

    ks, levels = [], []
    for lc in kc.levels:
        k = max(1, int(lc.n_clusters / factor))
        k = min(k, ks[-1] - 1) if ks else k
        if k < 1:
            break
        ks.append(k)
        levels.append(dataclasses.replace(lc, n_clusters=k))
    return dataclasses.replace(kc, levels=tuple(levels), n_clusters=ks)


def long_run_warning(
    kc: KMeansConfig, n: int, dim: int, res: Resources, cal: Calibration, limit_s: float = LONG_RUN_S
) -> str | None:
    """One line when the plan exceeds ``limit_s``, naming settings planned to fit: the coarsest
    scaling of k by a power of 2, the fewest GPUs (8 a node), the fewest nodes like this one."""
    import dataclasses

    planned = plan_kmeans(kc, n, dim, res, cal).seconds
    if planned <= limit_s:
        return None
    fits = []
    for e in range(1, 21):
        coarse = _scaled(kc, 2**e)
        if plan_kmeans(coarse, n, dim, res, cal).seconds <= limit_s:
            fits.append(f"kmeans.n_clusters={list(coarse.n_clusters)}")
            break
    gpu_kc = dataclasses.replace(kc, use_gpu=True, n_actors=None)
    for gpus in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        nodes = max(1, math.ceil(gpus / 8))
        gres = dataclasses.replace(res, nodes=nodes, gpus=gpus / nodes, source="planned")
        if plan_kmeans(gpu_kc, n, dim, gres, cal).seconds <= limit_s:
            fits.append(f"kmeans.use_gpu=true on {gpus} GPU(s)")
            break
    cpu_kc = dataclasses.replace(kc, n_actors=None, in_process=False)
    for nodes in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if plan_kmeans(cpu_kc, n, dim, dataclasses.replace(res, nodes=nodes, source="planned"), cal).seconds <= limit_s:
            fits.append(f"{nodes} nodes like this one (ray.address=...)")
            break
    advice = " or ".join(fits) if fits else "none of coarser k, GPUs or more nodes within 1024x"
    return (
        f"kmeans is planned to take {_duration(planned)} (> {_duration(limit_s)}) for N={n:,} D={dim} at "
        f"k={list(kc.n_clusters)} on {res.nodes} node(s) x {res.cpus:g} CPU; planned to fit: {advice}"
    )


def plan_before_level_1(
    kc: KMeansConfig, n: int, dim: int, calibration: str | Path, min_flops: float = 5e11
) -> tuple[str, str | None] | None:
    """(plan table, long-run warning or None) that ``run_cluster`` logs before level 1.

    Uses the stored calibration for ``dim``; measures one (a few seconds, stored) only when level 1
    is large (exact-assignment flops above ``min_flops``), else returns None for small runs."""
    if n < 1 or dim < 1:
        return None
    path = Path(calibration).expanduser()
    stored = json.loads(path.read_text()) if path.exists() else {}
    if str(dim) in stored:
        cal = Calibration.from_json(stored[str(dim)])
    else:
        lc = kc.levels[0]
        flops = level_flops(n, dim, lc.n_clusters, lc.n_iters, lc.n_resampling_steps, lc.sample_size, lc.n_splits, 1)
        if sum(flops[:2]) < min_flops:
            return None
        cal, _ = load_calibration(path, dim, False)
    from pipeline.engine import ray_running

    res = Resources.from_ray() if ray_running() else Resources.this_machine()
    return format_plan(plan_kmeans(kc, n, dim, res, cal), cal), long_run_warning(kc, n, dim, res, cal)


def plan_for_run(run: Any, kmeans_cfg: dict, seed: int, calibration: str | Path) -> str | None:
    """The plan of ``strata cluster`` on a run's embeddings (N from the footers, before dedup), or
    None when no calibration is stored for their width (the cluster job never calibrates)."""
    from pipeline.artifacts import embedding_files

    files = embedding_files(run)
    if not files:
        return None
    n, dim = int(sum(row_counts(files))), embedding_dim(files[0])
    path = Path(calibration).expanduser()
    stored = json.loads(path.read_text()) if path.exists() else {}
    if str(dim) not in stored or n < 1:
        return None
    from pipeline.engine import ray_running

    res = Resources.from_ray() if ray_running() else Resources.this_machine()
    cal = Calibration.from_json(stored[str(dim)])
    kc = KMeansConfig.from_dict(dict(kmeans_cfg), seed=seed, n_points=n)
    return format_plan(plan_kmeans(kc, n, dim, res, cal), cal)
