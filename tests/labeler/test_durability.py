"""SIGKILL the server in the middle of a labeling session; every acknowledged label survives once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest

from pipeline.labeler import LabelClient, LabelStore, serve

N_IMAGES = 200
KILL_AFTER = 70
LABELS = ("positive", "negative", "unsure")


def _labeler(name: str, url_of: list[str], acked: dict, pending: dict, stop: threading.Event, lock: threading.Lock):
    """Label until the queue is empty; a failed request is retried with the same request_id."""
    while not stop.is_set():
        client = LabelClient(url_of[0], name, timeout=5)
        try:
            for rid, (item_id, label) in list(pending.get(name, {}).items()):
                r = client.label(item_id, label, request_id=rid)
                with lock:
                    acked[rid] = (item_id, label)
                    del pending[name][rid]
            ids = client.next(4)
            if not ids:
                return
            for item_id in ids:
                rid = uuid.uuid4().hex
                label = LABELS[hash(item_id) % 3]
                with lock:
                    pending.setdefault(name, {})[rid] = (item_id, label)
                r = client.label(item_id, label, request_id=rid)
                assert r["id"] == item_id
                with lock:
                    acked[rid] = (item_id, label)
                    del pending[name][rid]
        except httpx.TransportError:
            stop.wait(0.1)  # server gone: wait for the restart, then retry what was in flight
        finally:
            client.close()


@pytest.mark.slow
def test_sigkill_mid_session_keeps_every_acknowledged_label(tmp_path: Path, image_files):
    _, uris = image_files
    ids = [f"dur/{i:04d}" for i in range(N_IMAGES)]
    store = LabelStore(tmp_path / "labels.sqlite")
    store.register(ids, [uris[i % len(uris)] for i in range(N_IMAGES)])
    store.enqueue(ids)

    server = serve(store.path, subprocess=True, port=0)
    url_of = [server.url]
    acked: dict[str, tuple[str, str]] = {}
    pending: dict[str, dict[str, tuple[str, str]]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_labeler, args=(f"labeler{k}", url_of, acked, pending, stop, lock)) for k in range(4)
    ]
    for t in threads:
        t.start()
    while len(acked) < KILL_AFTER:
        assert any(t.is_alive() for t in threads)
        stop.wait(0.01)
    server.kill()  # SIGKILL while the four labelers are sending
    acked_before_kill = dict(acked)
    assert server.alive is False

    restarted = serve(store.path, subprocess=True, port=0)
    url_of[0] = restarted.url
    try:
        for t in threads:
            t.join(timeout=240)
        assert not any(t.is_alive() for t in threads)
    finally:
        stop.set()
        restarted.stop()

    events = LabelStore(store.path).events()
    by_request = {e.request_id: e for e in events}
    assert len(by_request) == len(events)  # no request recorded twice
    assert KILL_AFTER <= len(acked_before_kill) < N_IMAGES
    for rid, (item_id, label) in acked.items():  # every acknowledged label is there ...
        assert (by_request[rid].id, by_request[rid].label) == (item_id, label)
    assert sorted(e.id for e in events) == sorted(ids)  # ... exactly once, and nothing is lost
    assert LabelStore(store.path).progress().labeled == N_IMAGES
