"""``strata active`` on a run directory: embeddings -> starter -> loop -> labeled dataset.

Outputs under ``<run_dir>/active/``:

- ``labels.parquet``: ``id, uri, label (positive|negative|unsure), source (human|model), score, round``:
  every human label plus every unlabeled image the final head scores ``>= threshold``;
- ``rounds.parquet``: one row per round (labeled counts, changed share, timings; with ``stop.audit_size``
  the estimated recall of the exported set ``exported_recall_est, _lo, _hi``, the precision of the
  model's positive calls ``model_precision_est, _lo, _hi``, the share of the positives a person labeled
  ``labeled_recall_est, _lo, _hi``, ``remaining_*``, ``missed_*``, ``false_calls_*`` and the audit counts;
  the last round's ``stop_reason`` and ``stop_rule``; with an oracle ``labeling_effort,
  positives_retrieved`` (the exported set's true recall), ``false_positive_rate, f1, precision, recall,
  recall_labeled``);
- ``head.npz`` (final head weights), ``summary.json``, ``imagefolder/<label>/`` (``export.imagefolder``).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import HumanLabeler, OracleLabeler
from pipeline.active.loop import LoopResult, run_loop
from pipeline.active.metrics import run_metrics
from pipeline.active.state import RunDirCheckpoint
from pipeline.active.stopping import EXPORT_FIELDS, RECALL_FIELDS
from pipeline.artifacts import (
    ACTIVE_HEAD,
    ACTIVE_IMAGEFOLDER,
    ACTIVE_LABELS,
    ACTIVE_ROUNDS,
    ACTIVE_SUMMARY,
    EMBEDDINGS,
    read_run_embeddings,
)
from pipeline.atomic import atomic_path
from pipeline.embed.reduce import query_transform
from pipeline.io.tables import write_parquet_atomic
from pipeline.progress import Progress
from pipeline.rundir import RunDir, Step

log = logging.getLogger(__name__)

LABEL_NAMES = {1: "positive", 0: "negative", -1: "unsure"}


def ensure_embeddings(run: RunDir, cfg: dict[str, Any]) -> None:
    """Embed ``input`` (Ray must be up) unless the run already holds embeddings."""
    if run.has(EMBEDDINGS):
        return
    from pipeline.embed.stage import run_embed

    run_embed(run, dict(cfg["input"]), dict(cfg["embed"]))


def starter_rows_and_vectors(
    cfg: dict[str, Any],
    ids: np.ndarray,
    embed_cfg: dict,
    dim: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``starter.id`` (one id or a list) -> pool rows; ``starter.image`` (path(s)) -> embedded vectors,
    mapped into the pool's space by ``transform`` (``pipeline.embed.reduce.query_transform``: the
    run's ``embed.dim`` reduction)."""
    starter = cfg.get("starter") or {}
    want = starter.get("id")
    want = [] if want is None else [want] if isinstance(want, (str, int)) else list(want)
    row_of = {str(i): r for r, i in enumerate(ids)}
    missing = [str(i) for i in want if str(i) not in row_of]
    if missing:
        raise KeyError(f"starter.id {missing[:3]} not among the {len(ids)} embedded images")
    rows = np.array([row_of[str(i)] for i in want], dtype=np.int64)
    paths = starter.get("image")
    paths = [] if paths is None else [paths] if isinstance(paths, str) else list(paths)
    vectors = None
    if paths:
        from pipeline.embed.embedder import Embedder
        from pipeline.io.sources import load_image_bytes

        vectors = Embedder(embed_cfg).embed_bytes([load_image_bytes(p) for p in paths])
        if transform is not None:
            vectors = transform(vectors)
        if vectors.shape[1] != dim:
            raise ValueError(
                f"starter images embed to dimension {vectors.shape[1]}, the run's embeddings have {dim}; "
                "give the embed config the run was embedded with"
            )
    if not len(rows) and vectors is None:
        raise ValueError("give starter.id=<id in the run> or starter.image=<path>")
    return rows, vectors


def run_active(
    run: RunDir, cfg: dict[str, Any], *, force: bool = False, embed_cfg: dict | None = None
) -> dict[str, Any]:
    """Run (or resume) ``strata active`` in ``run``; ``cfg`` is the resolved ``conf/active.yaml``.

    ``embed_cfg``: the embed config the run's embeddings were made with (for ``starter.image``);
    defaults to ``cfg["embed"]``.
    """
    loop_cfg = ActiveConfig.from_dict({**dict(cfg["active"]), "seed": int(cfg["seed"])})
    step_cfg = {
        "active": loop_cfg.to_dict(),
        "starter": cfg.get("starter"),
        "labeler": (cfg.get("labeler") or {}).get("kind"),
        "oracle": cfg.get("oracle"),
    }
    ensure_embeddings(run, cfg)
    with run.step("active", step_cfg, inputs=[EMBEDDINGS], force=force) as step:
        if step.skipped:
            return run.read_json(ACTIVE_SUMMARY)
        summary = _active_loop(run, cfg, loop_cfg, step, embed_cfg)
        step.result = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    return summary


def _active_loop(
    run: RunDir, cfg: dict[str, Any], loop_cfg: ActiveConfig, step: Step, embed_cfg: dict | None
) -> dict[str, Any]:
    table, x = read_run_embeddings(run)
    ids = np.asarray(table.column("id").to_pylist(), dtype=str)
    uris = table.column("uri").to_pylist() if "uri" in table.column_names else [""] * len(ids)
    transform = query_transform(run, dim=x.shape[1]) if (cfg.get("starter") or {}).get("image") else None
    rows, vectors = starter_rows_and_vectors(cfg, ids, embed_cfg or dict(cfg.get("embed") or {}), x.shape[1], transform)

    checkpoint = RunDirCheckpoint(run, step.fingerprint)
    if step.force:
        checkpoint.clear()
    labeler_cfg = dict(cfg.get("labeler") or {})
    kind = labeler_cfg["kind"]
    oracle_cfg = cfg.get("oracle") or {}
    truth = None
    if oracle_cfg.get("column") and oracle_cfg.get("positive") is not None:
        if oracle_cfg["column"] not in table.column_names:
            raise KeyError(
                f"oracle.column={oracle_cfg['column']!r} is not a column of the embeddings: {table.column_names}"
            )
        truth = OracleLabeler.from_column(table.column(oracle_cfg["column"]).to_pylist(), oracle_cfg["positive"]).truth
    server = store = None
    if kind == "oracle":
        if truth is None:
            raise ValueError("labeler=oracle needs oracle.column=<column> and oracle.positive=<class>")
        labeler = OracleLabeler(truth)
    elif kind == "human":
        from pipeline.labeler.job import open_store, start_server, starter_reference

        store = open_store(run, labeler_cfg)
        labeler = HumanLabeler(store, ids.tolist(), uris, timeout_s=float(labeler_cfg["timeout_s"]))
        if labeler_cfg["serve"]:
            labeler_cfg["reference"] = labeler_cfg.get("reference") or starter_reference(store, cfg.get("starter"))
            server = start_server(store, labeler_cfg, run)
            print(f"Strata labeler: {server.url}" + (f"  (token {server.token})" if server.token else ""), flush=True)
    else:
        raise ValueError(f"labeler must be 'oracle' or 'human', got {kind!r}")
    seed_n = loop_cfg.n_neighbors + loop_cfg.n_random
    per_round = loop_cfg.batch_size + loop_cfg.stop.audit_size  # audits spend the budget too
    rounds = loop_cfg.max_rounds or 1 + max(0, math.ceil((loop_cfg.budget * len(ids) - seed_n) / per_round))
    shown = ("n_labeled", "n_positive_labeled", "positives_retrieved", "f1")

    def on_round(record: dict[str, Any]) -> None:
        log.debug("active round %d: %s", record["round"], record)
        line = recall_line(record, loop_cfg.stop.recall, loop_cfg.stop.precision)
        bar.update(**{k: record[k] for k in shown if k in record}, **({"estimated": line} if line else {}))
        if store is not None and line:
            store.set_status(line)

    try:
        with Progress("active/rounds", total=rounds, run=run, unit="round") as bar:
            result = run_loop(
                x,
                labeler,
                loop_cfg,
                ids=ids.tolist(),
                starter_rows=rows,
                starter_vectors=vectors,
                truth=truth,
                checkpoint=checkpoint,
                on_round=on_round,
            )
    finally:
        if server is not None:
            server.stop()
    return write_outputs(run, result, ids, uris, truth, cfg)


def recall_line(record: dict[str, Any], recall: float | None = None, precision: float | None = None) -> str | None:
    """``exported recall ≈0.96 [0.81, 1.00] · model precision ≈0.97 [0.90, 1.00] · labeled by you ≈0.45
    (stop at recall 0.95)`` from a round's estimates (None before the first audit)."""
    if record.get("exported_recall_est") is None:
        return None

    def part(name: str, key: str) -> str:
        if record.get(f"{key}_est") is None:
            return f"{name} -"
        return f"{name} ≈{record[f'{key}_est']:.2f} [{record[f'{key}_lo']:.2f}, {record[f'{key}_hi']:.2f}]"

    line = " · ".join(
        (
            part("exported recall", "exported_recall"),
            part("model precision", "model_precision"),
            f"labeled by you ≈{record['labeled_recall_est']:.2f}"
            if record.get("labeled_recall_est") is not None
            else "",
        )
    ).rstrip(" ·")
    targets = [f"{n} {t:.2f}" for n, t in (("recall", recall), ("precision", precision)) if t is not None]
    return line + (f" (stop at {', '.join(targets)})" if targets else "")


def write_outputs(
    run: RunDir, result: LoopResult, ids: np.ndarray, uris: list[str], truth: np.ndarray | None, cfg: dict[str, Any]
) -> dict[str, Any]:
    """labels.parquet, rounds.parquet, head.npz, summary.json and the ImageFolder export."""
    state, probs = result.state, result.probs
    labeled = np.zeros(len(ids), dtype=bool)
    labeled[state.rows] = True
    model_rows = np.flatnonzero(result.predicted & ~labeled)
    out_rows = np.concatenate([state.rows, model_rows])
    labels = [LABEL_NAMES[int(v)] for v in state.labels] + ["positive"] * len(model_rows)
    table = pa.table(
        {
            "id": pa.array(ids[out_rows].tolist(), pa.string()),
            "uri": pa.array([uris[i] for i in out_rows], pa.string()),
            "label": pa.array(labels, pa.string()),
            "source": pa.array(["human"] * len(state.rows) + ["model"] * len(model_rows), pa.string()),
            "score": pa.array(probs[out_rows], pa.float32()),
            "round": pa.array(
                np.concatenate([state.label_round, np.full(len(model_rows), state.round, np.int32)]), pa.int32()
            ),
        }
    )
    write_parquet_atomic(table, run.path(ACTIVE_LABELS))
    write_parquet_atomic(pa.Table.from_pylist(state.history), run.path(ACTIVE_ROUNDS))
    buf = io.BytesIO()
    np.savez(buf, kind=np.array(result.head.kind), **{k: np.asarray(v) for k, v in result.head.state().items()})
    with atomic_path(run.local(ACTIVE_HEAD), run.fs) as tmp, run.fs.open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
    summary: dict[str, Any] = {
        "n_pool": int(len(ids)),
        "n_labeled": int(len(state.rows)),
        "labeling_effort": float(len(state.rows) / len(ids)),
        "rounds": int(state.round),
        "stop_reason": result.stop_reason,
        "n_human_positive": int((state.labels == 1).sum()),
        "n_model_positive": int(len(model_rows)),
    }
    # Without an oracle the head's recall is unknown (null), never 0; the audit estimates the labeled set's.
    summary["recall"] = None
    if truth is not None:
        m = run_metrics(truth, state.rows, state.labels, result.predicted)
        keys = ("positives_retrieved", "false_positive_rate", "f1", "precision", "recall", "recall_labeled")
        summary.update({k: m[k] for k in keys})
    last = state.history[-1] if state.history else {}
    summary["stop_rule"] = last.get("stop_rule")
    if "exported_recall_est" in last:
        fields = (*EXPORT_FIELDS, *RECALL_FIELDS)
        summary.update({k: last.get(k) for k in fields})
        stop_cfg = cfg["active"].get("stop", {})
        summary["stop_recall"] = stop_cfg.get("recall")
        summary["stop_precision"] = stop_cfg.get("precision")
        summary["audit_rounds"] = [
            {"round": h["round"], **{k: h.get(k) for k in fields}}
            for h in state.history
            if h.get("exported_recall_est") is not None
        ]
    mode = cfg["export"]["imagefolder"]
    if mode and mode != "none":
        summary["imagefolder"] = export_imagefolder(run, table, mode)
    run.write_json(ACTIVE_SUMMARY, summary)
    return summary


def export_imagefolder(run: RunDir, table: pa.Table, mode: str = "copy") -> dict[str, int]:
    """``active/imagefolder/<label>/<file>`` for positive and negative rows (not ``unsure``).

    Rows of one Parquet shard are read together (one pass per shard, not one per image).
    """
    from pipeline.io.sources import load_image_bytes
    from pipeline.labeler.export import file_name

    if mode not in ("copy", "symlink"):
        raise ValueError(f"export.imagefolder must be copy, symlink or none, got {mode!r}")
    final = run.local(ACTIVE_IMAGEFOLDER)
    items = [
        (item_id, uri, label)
        for item_id, uri, label in zip(*(table.column(c).to_pylist() for c in ("id", "uri", "label")))
        if label != "unsure"
    ]
    if not items:  # nothing to export: no folder
        if run.fs.exists(final):
            run.fs.rm(final, recursive=True)
        return {}
    counts: dict[str, int] = defaultdict(int)
    by_shard: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    with atomic_path(final, run.fs) as tmp:
        for item_id, uri, label in items:
            run.fs.makedirs(f"{tmp}/{label}", exist_ok=True)
            target = f"{tmp}/{label}/{file_name(item_id, uri)}"
            counts[label] += 1
            base, _, frag = uri.partition("#")
            if frag and base.endswith(".parquet"):
                by_shard[base].append((int(frag), target, label))
            elif mode == "symlink" and "://" not in uri and os.path.isfile(uri):
                os.symlink(os.path.abspath(uri), target)
            else:
                _write_image(run, target, load_image_bytes(uri))
        for base, shard_items in by_shard.items():
            with fsspec.open(base, "rb") as fh:
                col = pq.read_table(fh, columns=["image"]).column("image")
            for row, target, _ in shard_items:
                _write_image(run, target, col[row].as_py())
    return dict(counts)


def _write_image(run: RunDir, target: str, data: bytes) -> None:
    if not os.path.splitext(target)[1]:
        target += ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png" if data[:4] == b"\x89PNG" else ".img"
    with run.fs.open(target, "wb") as fh:
        fh.write(data)
