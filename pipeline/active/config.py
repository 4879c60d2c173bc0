"""Settings of the active-learning loop (``conf/active/*.yaml`` -> :class:`ActiveConfig`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.active.diversity import DIVERSITY
from pipeline.active.strategies import STRATEGIES


@dataclass
class ScaleConfig:
    """Score only a k-center coreset of the pool, then expand the best candidates to their neighbours."""

    enabled: bool = False
    fraction: float = 0.1  # share of the pool in the scored coreset
    neighbors: int = 8  # neighbours of each top candidate added back before the final choice
    sample_size: int = 1024  # stratified k-center candidate sample


@dataclass
class ActiveConfig:
    n_neighbors: int = 64  # seed set: nearest neighbours of the starter(s)
    n_random: int = 32  # seed set: random images
    batch_size: int = 64  # images labeled per round
    budget: float = 0.05  # stop when this share of the pool is labeled
    min_change: float = 0.0  # stop when a round flips fewer than this share of predictions (0 = off)
    max_rounds: int | None = None
    strategy: str = "least_confidence"
    diversity: str = "none"
    candidate_factor: int = 10  # diversity chooses among the top candidate_factor * batch_size
    sigma: float = 0.1  # gaussian strategy width
    block_size: int = 8  # iterative_proximity
    penalty: float = 1.0  # iterative_proximity
    n_clusters: int = 16  # clustering
    threshold: float = 0.5  # predicted positive when p >= threshold
    head: dict[str, Any] = field(default_factory=lambda: {"kind": "logistic", "c": 1.0, "class_weight": "balanced", "standardize": True})
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    seed: int = 0

    @classmethod
    def from_dict(cls, cfg: dict | None) -> "ActiveConfig":
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown active config keys {unknown}; known: {sorted(known)}")
        if isinstance(cfg.get("scale"), dict):
            cfg["scale"] = ScaleConfig(**cfg["scale"])
        if cfg.get("head") is not None:
            cfg["head"] = {**cls().head, **dict(cfg["head"])}
        out = cls(**cfg)
        out.validate()
        return out

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.diversity not in DIVERSITY:
            raise ValueError(f"diversity must be one of {DIVERSITY}, got {self.diversity!r}")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget must be in (0, 1], got {self.budget}")
        if self.batch_size < 1 or self.candidate_factor < 1:
            raise ValueError("batch_size and candidate_factor must be >= 1")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0 <= self.min_change < 1:
            raise ValueError(f"min_change must be in [0, 1), got {self.min_change}")
        if self.scale.enabled and not 0 < self.scale.fraction <= 1:
            raise ValueError(f"scale.fraction must be in (0, 1], got {self.scale.fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
