"""Settings of the coreset step (``conf/coreset/default.yaml``; light: no torch)."""

from __future__ import annotations

from typing import Any

from pipeline.config import with_defaults

METHODS = ("auto", "exact", "stratified", "per_cluster")


def coreset_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` over the defaults of ``conf/coreset/default.yaml``; unknown keys and bad values are an error."""
    c = with_defaults("coreset/default", cfg)
    if c["method"] not in METHODS:
        raise ValueError(f"coreset.method must be one of {METHODS}, got {c['method']!r}")
    from pipeline.sampling.objectives import OBJECTIVES

    if c["per_cluster"]["objective"] not in OBJECTIVES:
        raise ValueError(
            f"coreset.per_cluster.objective must be one of {tuple(OBJECTIVES)}, got {c['per_cluster']['objective']!r}"
        )
    if c["size"] is None and not 0 < float(c["fraction"]) <= 1:
        raise ValueError(f"coreset.fraction must be in (0, 1], got {c['fraction']}")
    return c
