"""Settings of hierarchical k-means (schema of ``conf/kmeans/*.yaml``; light: no FAISS)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from pipeline.config import check_keys, load_group, schema

METRICS = ("l2", "cosine")
STRATEGIES = ("closest", "random")
INITS = ("kmeans++", "random")


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
    n_actors: int | None
    in_process: bool
    cpus_per_actor: float
    threads_per_actor: int
    use_gpu: bool
    chunk_mb: float
    split_tasks: int
    max_actor_restarts: int
    max_step_retries: int
    seed: int = 0  # the job's seed (set by the job, not by this group)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any], seed: int | None = None) -> KMeansConfig:
        """Build from a config dict whose per-level keys are lists (scalars are broadcast)."""
        cfg = dict(cfg)
        if "n_clusters" not in cfg:
            raise ValueError("kmeans config needs n_clusters (one entry per level)")
        check_keys(cfg, {f.name for f in fields(cls)} - {"levels"}, "kmeans")
        n_levels = len(cfg["n_clusters"]) if isinstance(cfg["n_clusters"], Sequence) else 1
        defaults = load_group("kmeans/default")
        per_level: dict[str, list] = {}
        for key in PER_LEVEL:
            if key in cfg:
                value = cfg[key]
            else:
                value = defaults[key] if len(defaults[key]) == n_levels else defaults[key][0]
            values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n_levels
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
            "seed": self.seed,
        }
