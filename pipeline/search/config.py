"""How a search index is built and queried (schema of ``conf/search/*.yaml``; light: no FAISS)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from pipeline.config import load_group, schema

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf_flat", "ivf_pq", "hnsw")


def conf_default(config: str, *keys: str) -> Any:
    """A setting of ``conf/<config>.yaml`` (its one source), e.g. ``("search", "query", "k")``, for
    a library call that leaves it out (None)."""
    value = load_group(config)
    for key in keys:
        value = value[key]
    return value


@schema("search/default")
class IndexConfig:
    """How to build and query an index (``conf/search/*.yaml``: defaults and docs there)."""

    kind: str  # auto | flat | ivf_flat | ivf_pq | hnsw
    metric: str  # ip | l2
    normalize: bool
    flat_max: int
    large_kind: str
    nlist: int | None
    nprobe: int
    pq_m: int
    pq_nbits: int
    pq_fastscan: bool
    refine_factor: int
    hnsw_m: int
    ef_construction: int
    ef_search: int
    train_size: int | None
    add_batch: int
    partition_by: list[str]
    use_gpu: bool
    seed: int

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> IndexConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"unknown index config keys {unknown}; known: {sorted(known)}")
        if cfg.get("partition_by") is None:
            cfg["partition_by"] = []
        elif isinstance(cfg["partition_by"], str):
            cfg["partition_by"] = [cfg["partition_by"]]
        out = cls(**cfg)
        out.partition_by = list(out.partition_by)
        out.validate()
        return out

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        if self.large_kind not in KINDS[1:]:
            raise ValueError(f"large_kind must be one of {KINDS[1:]}, got {self.large_kind!r}")
        if self.metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {self.metric!r}")
        for name in ("nprobe", "ef_search", "hnsw_m", "ef_construction", "add_batch", "pq_m", "pq_nbits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    def kind_for(self, n: int) -> str:
        """Index kind for a partition of ``n`` rows (tiny partitions fall back to exact search)."""
        kind = self.kind if self.kind != "auto" else ("flat" if n <= self.flat_max else self.large_kind)
        min_rows = {"ivf_flat": 39 * 8, "ivf_pq": 39 * 2**self.pq_nbits}.get(kind, 0)
        if n < min_rows:
            log.info("partition of %d rows is too small to train %s; using an exact index", n, kind)
            return "flat"
        return kind

    def nlist_for(self, n: int) -> int:
        if self.nlist:
            return int(max(1, min(self.nlist, n)))
        return int(np.clip(round(4 * math.sqrt(n)), 1, max(1, n // 39)))

    def train_size_for(self, n: int, nlist: int) -> int:
        return int(min(n, self.train_size or 256 * nlist))
