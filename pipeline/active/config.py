"""Settings of the active-learning loop (``conf/active/*.yaml`` -> :class:`ActiveConfig`)."""

from __future__ import annotations

from dataclasses import asdict, field, fields
from typing import Any

from pipeline.active.diversity import check_diversity
from pipeline.active.strategies import check_strategy
from pipeline.config import schema


@schema("active/default", "active", key="scale")
class ScaleConfig:
    """Score only a k-center coreset of the pool, then expand the best candidates to their neighbours."""

    enabled: bool
    fraction: float  # share of the pool in the scored coreset
    neighbors: int  # neighbours of each top candidate added back before the final choice
    sample_size: int  # stratified k-center candidate sample


@schema("active/default", "active", key="stop")
class StopConfig:
    """A random audit each round -> estimated recall / precision of the export with intervals -> optional stop."""

    audit_size: int
    uniform_share: float
    window: int | None
    confidence: float
    recall: float | None
    precision: float | None
    rule: str
    folds: int
    calibration_ridge: float

    def validate(self) -> None:
        if self.audit_size < 0:
            raise ValueError(f"stop.audit_size must be >= 0, got {self.audit_size}")
        if not 0 < self.uniform_share <= 1:
            raise ValueError(f"stop.uniform_share must be in (0, 1], got {self.uniform_share}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"stop.window must be >= 1 or null, got {self.window}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"stop.confidence must be in (0, 1), got {self.confidence}")
        if self.rule not in ("lower", "point"):
            raise ValueError(f"stop.rule must be lower or point, got {self.rule!r}")
        if self.folds < 2:
            raise ValueError(f"stop.folds must be >= 2, got {self.folds}")
        if not self.calibration_ridge >= 0:
            raise ValueError(f"stop.calibration_ridge must be >= 0, got {self.calibration_ridge}")
        for name in ("recall", "precision"):
            target = getattr(self, name)
            if target is None:
                continue
            if not 0 < target <= 1:
                raise ValueError(f"stop.{name} must be in (0, 1] or null, got {target}")
            if self.audit_size == 0:
                raise ValueError(f"stop.{name} needs stop.audit_size > 0 (the estimate comes from the audit)")


@schema("active/default", "active")
class ActiveConfig:
    """The loop's settings (``conf/active/default.yaml``: defaults and docs there)."""

    n_neighbors: int
    n_random: int
    batch_size: int
    budget: float
    min_change: float
    max_rounds: int | None
    strategy: str
    diversity: str
    candidate_factor: int
    sigma: float
    block_size: int
    penalty: float
    n_clusters: int
    threshold: float
    head: dict[str, Any]
    scale: ScaleConfig = field(default_factory=lambda: ScaleConfig())
    stop: StopConfig = field(default_factory=lambda: StopConfig())
    seed: int = 0  # the job's seed (set by the job, not by this group)

    @classmethod
    def from_dict(cls, cfg: dict | None) -> ActiveConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown active config keys {unknown}; known: {sorted(known)}")
        if isinstance(cfg.get("scale"), dict):
            cfg["scale"] = ScaleConfig(**cfg["scale"])
        if isinstance(cfg.get("stop"), dict):
            stop = {**asdict(StopConfig()), **cfg["stop"]}
            bad = sorted(set(stop) - {f.name for f in fields(StopConfig)})
            if bad:
                raise ValueError(f"unknown active.stop keys {bad}; known: {sorted(asdict(StopConfig()))}")
            cfg["stop"] = StopConfig(**stop)
        if cfg.get("head") is not None:
            cfg["head"] = {**cls().head, **dict(cfg["head"])}
        out = cls(**cfg)
        out.validate()
        return out

    def validate(self) -> None:
        check_strategy(self.strategy)
        check_diversity(self.diversity)
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
        self.stop.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
