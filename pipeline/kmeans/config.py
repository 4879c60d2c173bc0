"""Settings of hierarchical k-means (schema of ``conf/kmeans/*.yaml``; light: no FAISS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.config import check_keys, load_group, schema

METRICS = ("l2", "cosine")
STRATEGIES = ("closest", "random")
INITS = ("kmeans++", "random", "auto")
RESAMPLE_INITS = ("warm", "fresh")
ASSIGNS = ("exact", "hnsw", "auto")
AUTO = "auto"


def conf_default(key: str) -> Any:
    """A setting of ``conf/kmeans/default.yaml`` (its one source), for building blocks called without
    a :class:`KMeansConfig` (e.g. ``chunk_mb`` of a single-process :func:`~pipeline.kmeans.algorithm.kmeans`)."""
    return load_group("kmeans/default")[key]


# Level-1 points per cluster: 5 up to 10,000 points (BENCHMARKS.md, "Balance on AID": pool/5 met
# the long-tail and redundancy targets where pool/15 missed), then growing as n^0.24 so that
# Vo et al.'s 743M-image run gets their ~74 points per cluster (10M level-1 clusters).
AUTO_POINTS_PER_CLUSTER = 5
AUTO_SMALL_POOL = 10_000
AUTO_GROWTH = 0.24
AUTO_LEVEL_RATIO = 5  # each upper level has 1/5 the clusters of the one below (measured: k2 = k1/5)
AUTO_LEVELS = ((1_000_000, 2), (100_000_000, 3))  # (pool below, levels); 4 levels above
NOMINAL_POOL = 10_000  # pool size used to check an ``auto`` config before the data is known


def auto_n_clusters(n_points: int) -> list[int]:
    """Per-level cluster counts for a pool of ``n_points`` (``kmeans.n_clusters: auto``).

    Level 1 gets ``n / p`` clusters with ``p = 5`` points per cluster up to 10,000 points and
    ``p = 5 (n / 10^4)^0.24`` above (1M points: ~66,000 clusters of ~15); every upper level 1/5 of
    the one below; 2 levels below 1M points, 3 below 100M, 4 above. Levels that would have fewer
    than 2 clusters are dropped (at least one level is kept).
    """
    n = max(int(n_points), 1)
    p = AUTO_POINTS_PER_CLUSTER * max(1.0, n / AUTO_SMALL_POOL) ** AUTO_GROWTH
    n_levels = next((lv for below, lv in AUTO_LEVELS if n < below), 4)
    ks = [max(1, round(n / p))]
    while len(ks) < n_levels and ks[-1] // AUTO_LEVEL_RATIO >= 2:
        ks.append(ks[-1] // AUTO_LEVEL_RATIO)
    return ks


@dataclass(frozen=True)
class CentroidIndex:
    """How a shard finds each row's nearest centroid (docs: ``conf/kmeans/default.yaml``).

    ``exact``: FAISS flat search, ``k`` distances per row. ``hnsw``: a FAISS HNSW graph over the
    centroids (single-threaded insertion, so the graph and the result are deterministic), about
    ``ef_search * M`` distances per row; built at the first Lloyd iteration of a run, then rebuilt
    every ``rebuild_every`` iterations; in between the graph keeps its links and takes the moved
    centroids as its vectors (the hint keeps a point's previous centroid when the search does worse). ``auto``: HNSW when
    ``k >= auto_min_k`` on CPU; exact for small k and on GPU, where brute force is fastest.
    """

    method: str = "exact"
    auto_min_k: int = 4096
    hnsw_m: int = 16
    ef_construction: int = 40
    ef_search: int = 16
    rebuild_every: int = 1

    def uses_hnsw(self, k: int, gpu: bool = False) -> bool:
        if gpu or self.method == "exact":
            return False
        return self.method == "hnsw" or k >= self.auto_min_k


@dataclass(frozen=True)
class LevelConfig:
    """Settings of one level (defaults and docs: ``conf/kmeans/default.yaml``)."""

    n_clusters: int
    n_iters: int
    n_resampling_steps: int
    sample_size: int
    resampling_strategy: str
    n_splits: int


PER_LEVEL: tuple[str, ...] = tuple(f.name for f in fields(LevelConfig))


@schema("kmeans/default", frozen=True)
class KMeansConfig:
    """Hierarchical k-means settings; ``from_dict`` reads the per-level lists of the config group.

    Defaults and docs: ``conf/kmeans/default.yaml``. A per-level key that a caller leaves out takes
    the YAML's list when it has one entry per level, else its first entry for every level.
    """

    levels: tuple[LevelConfig, ...]
    n_clusters: Any  # per-level lists: read into ``levels`` by ``from_dict``
    n_iters: Any
    n_resampling_steps: Any
    sample_size: Any
    resampling_strategy: Any
    n_splits: Any
    metric: str
    init: str
    n_local_trials: int | None
    init_sample_flops: float
    resample_init: str
    tol: float
    assign: str
    assign_auto_k: int
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    hnsw_rebuild_every: int
    n_actors: int | None
    in_process: Any  # true | false | "auto" (resolved by pipeline.kmeans.plan.resolve_in_process)
    cpus_per_actor: float
    threads_per_actor: int
    use_gpu: bool
    chunk_mb: float
    memory_budget_mb: float | None
    out_of_core: Any  # true | false | "auto"
    spill_dir: str | None
    split_tasks: int
    max_actor_restarts: int
    max_step_retries: int
    seed: int = 0  # the job's seed (set by the job, not by this group)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], seed: int | None = None, n_points: int | None = None) -> KMeansConfig:
        """Build from a config dict whose per-level keys are lists (scalars are broadcast).

        ``n_clusters: auto`` is resolved by :func:`auto_n_clusters` for ``n_points`` (a nominal
        10,000 when unknown, to check the rest of the config); its per-level lists are then cut to
        the number of levels chosen or extended with their last entry.
        """
        cfg = dict(cfg)
        if "n_clusters" not in cfg:
            raise ValueError("kmeans config needs n_clusters (one entry per level)")
        check_keys(cfg, {f.name for f in fields(cls)} - {"levels"}, "kmeans")
        auto = cfg["n_clusters"] == AUTO
        if auto:
            cfg["n_clusters"] = auto_n_clusters(NOMINAL_POOL if n_points is None else n_points)
        elif isinstance(cfg["n_clusters"], str):
            raise ValueError(f"kmeans.n_clusters must be {AUTO!r} or a list of integers, got {cfg['n_clusters']!r}")
        n_levels = len(cfg["n_clusters"]) if isinstance(cfg["n_clusters"], Sequence) else 1
        defaults = load_group("kmeans/default")
        per_level: dict[str, list] = {}
        for key in PER_LEVEL:
            if key in cfg:
                value = cfg[key]
            else:
                value = defaults[key] if len(defaults[key]) == n_levels else defaults[key][0]
            values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n_levels
            if auto and values:
                values = (values + values[-1:] * n_levels)[:n_levels]
            if len(values) != n_levels:
                raise ValueError(f"kmeans.{key} has {len(values)} entries, expected one per level ({n_levels})")
            per_level[key] = values
        levels = tuple(LevelConfig(**{k: per_level[k][i] for k in PER_LEVEL}) for i in range(n_levels))
        rest = {k: v for k, v in cfg.items() if k not in PER_LEVEL}
        if seed is not None:
            rest["seed"] = seed
        out = cls(levels=levels, **per_level, **rest)
        out.validate()
        return out

    def validate(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"kmeans.metric must be one of {METRICS}, got {self.metric!r}")
        if self.init not in INITS:
            raise ValueError(f"kmeans.init must be one of {INITS}, got {self.init!r}")
        if self.resample_init not in RESAMPLE_INITS:
            raise ValueError(f"kmeans.resample_init must be one of {RESAMPLE_INITS}, got {self.resample_init!r}")
        if not self.tol >= 0:
            raise ValueError(f"kmeans.tol must be >= 0, got {self.tol!r}")
        if self.assign not in ASSIGNS:
            raise ValueError(f"kmeans.assign must be one of {ASSIGNS}, got {self.assign!r}")
        hnsw = (self.hnsw_m, self.hnsw_ef_construction, self.hnsw_ef_search, self.hnsw_rebuild_every)
        if min(self.assign_auto_k, *hnsw) < 1:
            raise ValueError(
                "kmeans.assign_auto_k, hnsw_m, hnsw_ef_construction, hnsw_ef_search and hnsw_rebuild_every must be >= 1"
            )
        if not self.init_sample_flops > 0:
            raise ValueError(f"kmeans.init_sample_flops must be > 0, got {self.init_sample_flops!r}")
        if self.in_process not in (True, False, AUTO):
            raise ValueError(f"kmeans.in_process must be true, false or {AUTO!r}, got {self.in_process!r}")
        if self.out_of_core not in (True, False, AUTO):
            raise ValueError(f"kmeans.out_of_core must be true, false or {AUTO!r}, got {self.out_of_core!r}")
        if self.memory_budget_mb is not None and not self.memory_budget_mb > 0:
            raise ValueError(f"kmeans.memory_budget_mb must be > 0 MB or null, got {self.memory_budget_mb!r}")
        for i, lc in enumerate(self.levels, start=1):
            if (
                lc.n_clusters < 1
                or lc.n_iters < 0
                or lc.n_resampling_steps < 0
                or lc.sample_size < 1
                or lc.n_splits < 1
            ):
                raise ValueError(f"kmeans level {i}: invalid settings {lc}")
            if lc.resampling_strategy not in STRATEGIES:
                raise ValueError(f"kmeans level {i}: resampling_strategy must be one of {STRATEGIES}")
            if i > 1 and lc.n_clusters >= self.levels[i - 2].n_clusters:
                raise ValueError(f"kmeans level {i}: n_clusters must be smaller than level {i - 1}'s")

    def algorithm_fingerprint(self, level: int) -> dict:
        """The settings that determine level ``level``'s result (not the worker layout)."""
        return {
            "levels": [asdict(lc) for lc in self.levels[:level]],
            "metric": self.metric,
            "init": self.init,
            "n_local_trials": self.n_local_trials,
            "init_sample_flops": self.init_sample_flops,
            "resample_init": self.resample_init,
            "tol": self.tol,
            "centroid_index": asdict(self.centroid_index),
            "seed": self.seed,
        }

    @property
    def centroid_index(self) -> CentroidIndex:
        return CentroidIndex(
            self.assign,
            self.assign_auto_k,
            self.hnsw_m,
            self.hnsw_ef_construction,
            self.hnsw_ef_search,
            self.hnsw_rebuild_every,
        )
