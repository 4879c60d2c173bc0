"""What ``strata label`` does with a run directory: fill the queue, serve, export."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS, LABEL_FILES, LABELS, LABELS_DB, MANIFEST, input_fingerprint
from pipeline.atomic import atomic_path
from pipeline.labeler.app import LabelerSettings
from pipeline.labeler.export import export_imagefolder, export_parquet, read_catalog
from pipeline.labeler.server import LabelServer, serve
from pipeline.labeler.store import LabelStore
from pipeline.rundir import INPUT, RunDir

log = logging.getLogger(__name__)


def store_path(run: RunDir, labeler_cfg: dict[str, Any]) -> str:
    """The SQLite file of a run's labels (``labeler.db`` or ``<run_dir>/labels/labels.sqlite``)."""
    if labeler_cfg.get("db"):
        return str(labeler_cfg["db"])
    if "://" in run.root and not run.root.startswith("file://"):
        raise ValueError(f"run_dir {run.root!r} is remote; set labeler.db to a local SQLite path")
    return run.local(LABELS_DB)


def open_store(run: RunDir, labeler_cfg: dict[str, Any]) -> LabelStore:
    return LabelStore(
        store_path(run, labeler_cfg), labels=labeler_cfg.get("labels"), synchronous=labeler_cfg["synchronous"]
    )


def prepare_queue(run: RunDir, store: LabelStore, queue_cfg: dict[str, Any], seed: int = 0, force: bool = False) -> int:
    """Register the run's ``id -> uri`` catalog and enqueue the selected ids (idempotent).

    Returns the number of ids newly queued; a rerun with the same config and the same catalog
    (the run's manifest when it has one, else its embeddings, or ``queue.source``) is skipped.
    """
    if queue_cfg.get("source"):
        source, inputs = queue_cfg["source"], {INPUT: input_fingerprint(queue_cfg["source"])}
    else:
        artifact = MANIFEST if run.has(MANIFEST) else EMBEDDINGS
        source, inputs = run.path(artifact), [artifact]
    with run.step("label_queue", {"queue": queue_cfg, "seed": seed}, inputs, force=force) as step:
        if step.skipped:
            return 0
        ids, uris = read_catalog(source)
        store.register(ids, uris)
        chosen = _read_ids(queue_cfg["ids_file"]) if queue_cfg.get("ids_file") else list(ids)
        if queue_cfg["shuffle"]:
            order = np.random.default_rng(seed).permutation(len(chosen))
            chosen = [chosen[i] for i in order]
        if queue_cfg.get("limit") is not None:
            chosen = chosen[: int(queue_cfg["limit"])]
        added = store.enqueue(chosen, batch=queue_cfg.get("batch"))
        step.result = {"catalog": len(ids), "queued": added}
        log.info("label queue: %d catalog ids, %d newly queued", len(ids), added)
    return added


def _read_ids(path: str) -> list[str]:
    if path.endswith(".parquet"):
        return [str(x) for x in pq.read_table(path, columns=["id"]).column("id").to_pylist()]
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def export_labels(run: RunDir, store: LabelStore, export_cfg: dict[str, Any]) -> dict[str, int]:
    """``labels.parquet``, ``label_events.parquet`` and (optionally) an ImageFolder tree."""
    out = export_cfg.get("dir") or run.local(LABELS)
    # The live store changes under the same config: this step always recomputes.
    with run.step("label_export", {"export": export_cfg}, force=True) as step:
        rows = export_parquet(store, os.path.join(out, LABEL_FILES["labels"]), os.path.join(out, LABEL_FILES["events"]))
        counts: dict[str, int] = {}
        mode = export_cfg["imagefolder"]
        if mode and mode != "none":
            with atomic_path(os.path.join(out, LABEL_FILES["imagefolder"])) as tmp:
                counts = export_imagefolder(store, tmp, mode=mode)
        step.result = {"labeled": rows, **{f"n_{k}": v for k, v in counts.items()}}
        log.info("exported %d labels to %s", rows, out)
    return {"labeled": rows, **counts}


def settings_from(labeler_cfg: dict[str, Any]) -> LabelerSettings:
    keys = (
        "lease_seconds",
        "prefetch",
        "thumbnail_max_side",
        "cache_items",
        "allowed_hosts",
        "max_leased",
        "max_annotators",
        "max_body_kb",
        "prompt",
        "reference",
        "show_ids",
        "mode",
        "grid_size",
        "grid_guess",
    )
    return LabelerSettings(**{k: labeler_cfg[k] for k in keys if labeler_cfg.get(k) is not None})


def starter_reference(store: LabelStore, starter_cfg: dict[str, Any] | None) -> str | None:
    """The catalog id of the first starter (``strata active``), shown beside each image as the reference.

    ``starter.id`` is a pool id already; a ``starter.image`` path is registered as ``reference/<file name>``.
    """
    starter = starter_cfg or {}
    for key in ("id", "image"):
        value = starter.get(key)
        if value:
            first = str(value if isinstance(value, str) else list(value)[0])
            if key == "id":
                return first
            ref = f"reference/{os.path.basename(first.rstrip('/'))}"
            store.register([ref], [first])
            return ref
    return None


def start_server(store: LabelStore, labeler_cfg: dict[str, Any], run: RunDir | None = None) -> LabelServer:
    """Serve ``store``; in grid mode ``run``'s embeddings (or clusters) group a page's images."""
    settings = settings_from(labeler_cfg)
    if settings.mode == "grid" and run is not None:
        settings.neighbours_from = run.root
    return serve(
        store.path,
        labels=store.labels,
        host=labeler_cfg.get("host"),
        port=int(labeler_cfg.get("port") or 0),
        share=bool(labeler_cfg.get("share")),
        token=labeler_cfg.get("token"),
        settings=settings,
        synchronous=labeler_cfg["synchronous"],
    )


def run_label_job(
    run: RunDir, cfg: dict[str, Any], on_ready: Callable[[LabelServer], None] | None = None, force: bool = False
) -> dict[str, int]:
    """``action=prepare|serve|export`` on ``run`` (``cfg`` is the resolved ``conf/label.yaml``).

    ``serve`` blocks until SIGINT/SIGTERM (or, with ``stop_when_done``, until every queued image
    has a label), then exports; ``on_ready(server)`` is called once the server is up.
    """
    action = cfg["action"]
    if action not in ("prepare", "serve", "export"):
        raise ValueError(f"action must be prepare, serve or export, got {action!r}")
    store = open_store(run, cfg["labeler"])
    if action == "export":
        return export_labels(run, store, cfg["export"])
    prepare_queue(run, store, cfg["queue"], seed=int(cfg["seed"]), force=force)
    if action == "prepare":
        return store.progress().as_dict()["by_label"]
    server = start_server(store, cfg["labeler"], run)
    print(f"Strata labeler: {server.url}" + (f"  (token {server.token})" if server.token else ""), flush=True)
    if server.share_url:
        print(f"Share on your network: {server.share_url}", flush=True)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    if on_ready is not None:
        on_ready(server)
    try:
        while not stop.wait(0.5):
            p = store.progress()
            if cfg.get("stop_when_done") and p.queued and p.labeled == p.queued:
                log.info("every queued image is labeled; stopping")
                break
    finally:
        server.stop()
    run.update_run_json(labels=store.progress().as_dict())
    return export_labels(run, store, cfg["export"]) if cfg["export"]["on_exit"] else {}
