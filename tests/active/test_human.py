"""labeler=human: the loop queues each batch in the swipe labeler and a simulated person answers over HTTP."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.active.labelers import LabelTimeout
from pipeline.active.run import run_active
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.labeler import LabelClient, LabelStore
from pipeline.rundir import RunDir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _person(url: str, truth: dict[str, bool], stop: threading.Event, answered: list[str]) -> None:
    """Labels whatever the labeler offers, truthfully, until told to stop."""
    client = None
    while not stop.is_set():
        try:
            client = client or LabelClient(url, annotator="ann")
            ids = client.next(8)
        except httpx.HTTPError:  # server between runs
            client = None
            time.sleep(0.1)
            continue
        for item_id in ids:
            client.label(item_id, "positive" if truth[item_id] else "negative")
            answered.append(item_id)
        if not ids:
            time.sleep(0.05)


def test_human_mode_through_the_labeler_api(tmp_path) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 8)) * 2
    lab = rng.integers(5, size=400)
    x = (centers[lab] + rng.normal(size=(400, 8))).astype(np.float32)
    ids = [f"img{i:03d}" for i in range(400)]
    run = RunDir(str(tmp_path / "run"))
    write_parquet_atomic(
        pa.table(
            {
                "id": ids,
                "uri": [str(tmp_path / f"{i}.jpg") for i in ids],
                "label": [f"c{v}" for v in lab],
                "embedding": embeddings_to_arrow(x),
            }
        ),
        run.path("embeddings", "part-00000.parquet"),
    )
    port = _free_port()
    cfg = {
        "active": {"budget": 0.15, "batch_size": 10, "n_neighbors": 10, "n_random": 5, "stop": {"audit_size": 4}},
        "starter": {"id": ids[int(np.flatnonzero(lab == 2)[0])]},
        "labeler": {"kind": "human", "serve": True, "port": port, "timeout_s": 1.0, "synchronous": "NORMAL"},
        "oracle": {"column": "label", "positive": "c2"},
        "export": {"imagefolder": "none"},
        "seed": 0,
    }
    # Nobody is labeling: the seed batch times out (a resumable stop, not a hang or a stdin prompt).
    with pytest.raises(LabelTimeout, match="rerun"):
        run_active(run, cfg)
    truth = {i: bool(v == 2) for i, v in zip(ids, lab)}
    stop, answered = threading.Event(), []
    person = threading.Thread(target=_person, args=(f"http://127.0.0.1:{port}", truth, stop, answered), daemon=True)
    person.start()
    try:
        summary = run_active(run, {**cfg, "labeler": {**cfg["labeler"], "timeout_s": 120}})
    finally:
        stop.set()
        person.join(10)
    assert summary["n_labeled"] == 60 and summary["labeling_effort"] == pytest.approx(0.15)
    labels = pq.read_table(run.path("active", "labels.parquet")).to_pylist()
    human = [r for r in labels if r["source"] == "human"]
    assert len(human) == 60
    starter = cfg["starter"]["id"]
    # every human label is the person's answer; the starter is positive without asking
    assert all(r["label"] == ("positive" if truth[r["id"]] else "negative") for r in human)
    assert sorted(answered) == sorted(r["id"] for r in human if r["id"] != starter)
    store = LabelStore(run.local("labels", "labels.sqlite"))
    assert store.progress().queued == 59 and store.progress().labeled == 59
    # the labeler's progress bar carries the audit's estimates of the last round
    assert summary["exported_recall_est"] is not None and summary["labeled_recall_est"] is not None
    assert store.progress().status.startswith("exported recall ≈") and "labeled by you ≈" in store.progress().status
    assert summary["positives_retrieved"] > 0.9
