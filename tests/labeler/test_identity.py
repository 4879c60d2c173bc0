"""Annotator names are owned by sessions; lease quota; name limit; Host allowlist; token beyond loopback."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from fastapi.testclient import TestClient

from pipeline.labeler import LabelClient, LabelStore, serve
from pipeline.labeler.app import LabelerSettings, create_app


@pytest.fixture
def server(store: LabelStore):
    with serve(store.path, port=0) as handle:
        yield handle


def test_nobody_else_can_undo_label_or_release_as_alice(server, store: LabelStore):
    with LabelClient(server.url, "alice") as alice:
        ids = alice.next(3)
        alice.label(ids[0], "positive")
        mallory = httpx.Client(base_url=server.url)
        for path, body in [
            ("/api/undo", {}),
            ("/api/release", {}),
            ("/api/next", {"n": 2}),
            ("/api/label", {"id": ids[1], "label": "negative"}),
        ]:
            r = mallory.post(path, json={"annotator": "alice", **body})
            assert r.status_code == 403 and "another labeler session" in r.json()["detail"], path
        forged = mallory.post("/api/undo", json={"annotator": "alice"}, headers={"x-strata-session": "guess"})
        assert forged.status_code == 403
        assert store.current_labels() == {ids[0]: "positive"}
        assert alice.next(3)[:2] == ids[1:]  # alice still holds her leases
        assert alice.undo()["id"] == ids[0]  # and her own undo works
    store.unclaim("alice")  # the operator's remedy for a lost session
    assert mallory.post("/api/release", json={"annotator": "alice"}).status_code == 200


def test_lease_quota_and_name_limit(store: LabelStore):
    settings = dataclasses.replace(LabelerSettings(), max_leased=5, max_annotators=3)
    with serve(store.path, settings=settings, port=0) as server, httpx.Client(base_url=server.url) as greedy:
        first = greedy.post("/api/next", json={"annotator": "g0", "n": 64}).json()["items"]
        assert len(first) == 5
        assert [i["id"] for i in greedy.post("/api/next", json={"annotator": "g0", "n": 64}).json()["items"]] == [
            i["id"] for i in first
        ]
        held = 5
        for name in ("g1", "g2", "g3", "g4"):
            r = greedy.post("/api/next", json={"annotator": name, "n": 64})
            if r.status_code == 200:
                held += len(r.json()["items"])
            else:
                assert r.status_code == 403 and "max_annotators" in r.json()["detail"]
        assert held == 15 and store.progress().leased == 15  # 3 names x quota 5, of 60 images


def test_store_lease_quota_counts_held_items(store: LabelStore):
    assert len(store.lease("a", 3, max_held=4)) == 3
    assert len(store.lease("a", 10, max_held=4)) == 4
    assert store.lease("a", 2, max_held=4) == store.lease("a", 2)  # held ones first, no new ones


def test_host_header_allowlist_on_loopback(store: LabelStore):
    with TestClient(create_app(store), base_url="http://attacker.example") as c:
        assert c.get("/api/config").status_code == 421
        assert c.get("/api/config", headers={"host": "127.0.0.1:8765"}).status_code == 200
    allowed = dataclasses.replace(LabelerSettings(), allowed_hosts=["labels.example.org"])
    with TestClient(create_app(store, allowed), base_url="http://labels.example.org") as c:
        assert c.get("/api/config").status_code == 200


def test_beyond_loopback_a_token_is_required(store: LabelStore):
    with pytest.raises(ValueError, match="requires a token"):
        create_app(store, dataclasses.replace(LabelerSettings(), host="192.168.1.7"))
    settings = dataclasses.replace(LabelerSettings(), host="0.0.0.0", token="s3cret-token")
    with TestClient(create_app(store, settings), base_url="http://192.168.1.7:8765") as c:
        assert c.get("/api/config").status_code == 401  # any Host passes, but only with the token
        assert c.get("/api/config", headers={"authorization": "Bearer s3cret-token"}).status_code == 200


def test_large_bodies_are_refused_before_reading(store: LabelStore):
    with TestClient(create_app(store), base_url="http://127.0.0.1") as c:
        r = c.post("/api/release", content=b"[" + b"0," * 200_000 + b"0]", headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_kb" in r.json()["detail"]
        chunks = (b"[" if i == 0 else b"0," for i in range(200_000))  # no Content-Length: cut at the limit
        r = c.post("/api/release", content=chunks, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
