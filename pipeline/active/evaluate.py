"""The paper's evaluation protocol: every class, several random starters, several loop variants.

For class ``c`` of a labelled pool, ``n_starters`` images of ``c`` are drawn (seeded); each one
starts a loop (seed set, rounds, stop at the budget) with an oracle for ``c``. One row per
(variant, class, starter) holds the final measures of :mod:`pipeline.active.metrics`; means over
classes and starters summarise a variant. The exact pool index is built once and shared.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop
from pipeline.active.seed import pool_index

log = logging.getLogger(__name__)

MEASURES = ("labeling_effort", "positives_retrieved", "false_positive_rate", "f1")


def protocol_runs(
    x: np.ndarray,
    labels: Sequence[str],
    variants: Mapping[str, ActiveConfig],
    *,
    n_starters: int = 10,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pa.Table:
    """One row per (variant, class, starter): ``variant, class, starter, rounds, seconds`` + measures."""
    labels = np.asarray([str(v) for v in labels], dtype=object)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} embeddings")
    ids = [str(i) for i in (ids if ids is not None else range(len(x)))]
    index = pool_index(x, ids)
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for c in classes:
        truth = labels == c
        if not truth.any():
            raise ValueError(f"class {c!r} has no images")
        starters = rng.choice(np.flatnonzero(truth), size=min(n_starters, int(truth.sum())), replace=False)
        for s_i, starter in enumerate(starters):
            for name, cfg in variants.items():
                t0 = time.perf_counter()
                cfg_run = ActiveConfig.from_dict({**cfg.to_dict(), "seed": int(seed * 1_000_003 + s_i)})
                result = run_loop(x, OracleLabeler(truth), cfg_run, ids=ids, starter_rows=[int(starter)], truth=truth, index=index)
                last = result.state.history[-1]
                row = {"variant": name, "class": c, "starter": ids[int(starter)], "rounds": result.state.round,
                       "seconds": round(time.perf_counter() - t0, 3), **{k: last[k] for k in MEASURES}}
                rows.append(row)
                if progress is not None:
                    progress(row)
    return pa.Table.from_pylist(rows)


def summarize(runs: pa.Table, reach: float = 0.92) -> list[dict[str, Any]]:
    """Per variant: means of the measures over all runs, per-class mean F1 spread, share of runs with
    ``positives_retrieved >= reach``."""
    out = []
    variant = np.asarray(runs.column("variant").to_pylist(), dtype=object)
    cols = {k: np.asarray(runs.column(k).to_pylist(), dtype=float) for k in MEASURES}
    for name in dict.fromkeys(variant.tolist()):
        m = variant == name
        row = {"variant": name, "runs": int(m.sum())}
        row.update({k: float(cols[k][m].mean()) for k in MEASURES})
        row[f"share_retrieved_ge_{reach}"] = float((cols["positives_retrieved"][m] >= reach).mean())
        out.append(row)
    return out


def per_class(runs: pa.Table, variant: str) -> list[dict[str, Any]]:
    """Means of the measures per class for one variant."""
    t = runs.filter(pc.equal(runs.column("variant"), variant))
    cls = np.asarray(t.column("class").to_pylist(), dtype=object)
    cols = {k: np.asarray(t.column(k).to_pylist(), dtype=float) for k in MEASURES}
    return [{"class": c, **{k: float(cols[k][cls == c].mean()) for k in MEASURES}} for c in dict.fromkeys(cls.tolist())]
