"""The paper's evaluation protocol: every class, several random starters, several loop variants.

For class ``c`` of a labelled pool, ``n_starters`` images of ``c`` are drawn (seeded); each one
starts a loop (seed set, rounds, stop at the budget) with an oracle for ``c``. One row per
(variant, class, starter) holds the final measures of :mod:`pipeline.active.metrics`; means over
classes and starters summarise a variant. The exact pool index is built once and shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    n_starters: int,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> pa.Table:
    """One row per (variant, class, starter): ``variant, class, starter, rounds, seconds`` + measures."""
    labels = np.asarray([str(v) for v in labels], dtype=str)
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
                result = run_loop(
                    x, OracleLabeler(truth), cfg_run, ids=ids, starter_rows=[int(starter)], truth=truth, index=index
                )
                last = result.state.history[-1]
                row = {
                    "variant": name,
                    "class": c,
                    "starter": ids[int(starter)],
                    "rounds": result.state.round,
                    "seconds": round(time.perf_counter() - t0, 3),
                    **{k: last[k] for k in MEASURES},
                }
                rows.append(row)
                if progress is not None:
                    progress(row)
    return pa.Table.from_pylist(rows)


def summarize(runs: pa.Table, reach: float = 0.92) -> list[dict[str, Any]]:
    """Per variant: means of the measures over all runs, per-class mean F1 spread, share of runs with
    ``positives_retrieved >= reach``."""
    out = []
    variant = np.asarray(runs.column("variant").to_pylist(), dtype=str)
    cols = {k: np.asarray(runs.column(k).to_pylist(), dtype=float) for k in MEASURES}
    for name in dict.fromkeys(variant.tolist()):
        m = variant == name
        row = {"variant": name, "runs": int(m.sum())}
        row.update({k: float(np.nanmean(cols[k][m])) for k in MEASURES})
        row[f"share_retrieved_ge_{reach}"] = float((cols["positives_retrieved"][m] >= reach).mean())
        out.append(row)
    return out


def per_class(runs: pa.Table, variant: str) -> list[dict[str, Any]]:
    """Means of the measures per class for one variant."""
    t = runs.filter(pc.equal(runs.column("variant"), variant))
    cls = np.asarray(t.column("class").to_pylist(), dtype=str)
    cols = {k: np.asarray(t.column(k).to_pylist(), dtype=float) for k in MEASURES}
    return [
        {"class": c, **{k: float(np.nanmean(cols[k][cls == c])) for k in MEASURES}} for c in dict.fromkeys(cls.tolist())
    ]


def evaluate_run(run, cfg: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    """``strata evaluate-active`` on a run directory (``cfg``: resolved ``conf/evaluate_active.yaml``).

    Writes ``evaluate_active/runs.parquet`` and ``evaluate_active/summary.json`` (per-variant means).
    """
    from pipeline.active.run import ensure_embeddings
    from pipeline.artifacts import EMBEDDINGS, EVALUATE_ACTIVE_RUNS, EVALUATE_ACTIVE_SUMMARY, read_run_embeddings
    from pipeline.io.tables import write_parquet_atomic

    base = dict(cfg["active"])
    variants = {
        name: ActiveConfig.from_dict({**base, **dict(over or {})}) for name, over in (cfg.get("variants") or {}).items()
    }
    if not variants:
        raise ValueError("evaluate-active needs at least one entry in `variants`")
    step_cfg = {
        "variants": {k: v.to_dict() for k, v in variants.items()},
        "n_starters": cfg["n_starters"],
        "classes": cfg.get("classes"),
        "label_column": cfg["label_column"],
        "seed": cfg["seed"],
    }
    ensure_embeddings(run, cfg)
    with run.step("evaluate_active", step_cfg, inputs=[EMBEDDINGS], force=force) as step:
        if step.skipped:
            return run.read_json(EVALUATE_ACTIVE_SUMMARY)
        column = str(cfg["label_column"])
        table, x = read_run_embeddings(run)
        if column not in table.column_names:
            raise KeyError(f"label_column={column!r} is not a column of the embeddings: {table.column_names}")
        runs = protocol_runs(
            x,
            table.column(column).to_pylist(),
            variants,
            n_starters=int(cfg["n_starters"]),
            seed=int(cfg["seed"]),
            classes=cfg.get("classes"),
            ids=table.column("id").to_pylist(),
            progress=lambda r: log.info("evaluate-active: %s", r),
        )
        write_parquet_atomic(runs, run.path(EVALUATE_ACTIVE_RUNS))
        summary = {"n_pool": int(len(x)), "variants": summarize(runs)}
        run.write_json(EVALUATE_ACTIVE_SUMMARY, summary)
        step.result = {"runs": runs.num_rows}
    return summary
