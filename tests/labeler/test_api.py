"""HTTP API against a real server on 127.0.0.1: labels, undo, leases, export, auth, bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.labeler import LabelClient, LabelStore, export_imagefolder, export_parquet, serve


@pytest.fixture
def server(store: LabelStore):
    with serve(store.path, settings=None, port=0) as handle:
        yield handle


def test_label_undo_progress_over_http(server, store: LabelStore):
    with LabelClient(server.url, "alice") as alice:
        ids = alice.next(3)
        assert len(ids) == 3
        image = Image.open(io.BytesIO(alice.image(ids[0])))
        assert image.format == "JPEG" and max(image.size) <= 768
        r = alice.label(ids[0], "positive")
        assert r["progress"]["labeled"] == 1 and not r["duplicate"]
        assert alice.label(ids[1], "negative", request_id="retry-000001")["duplicate"] is False
        assert alice.label(ids[1], "negative", request_id="retry-000001")["duplicate"] is True
        undone = alice.undo()
        assert (undone["id"], undone["label"], undone["progress"]["labeled"]) == (ids[1], "negative", 1)
        # held ids come back first, in queue order: the undone one is alice's again
        again = alice.next(3)
        assert again[:2] == ids[1:3] and again[2] not in ids
        assert alice.labels() == {ids[0]: "positive"}
        assert alice.progress()["by_label"] == {"positive": 1, "negative": 0, "unsure": 0}
    assert [e.annotator for e in store.events()] == ["alice"] * 3


def test_two_annotators_never_share_an_image(server, store: LabelStore):
    seen: dict[str, set[str]] = {"alice": set(), "bob": set()}
    with LabelClient(server.url, "alice") as alice, LabelClient(server.url, "bob") as bob:
        for _ in range(8):
            for name, client in (("alice", alice), ("bob", bob)):
                ids = client.next(4)
                other = seen["bob" if name == "alice" else "alice"]
                assert not set(ids) & other
                seen[name].update(ids)
                client.label(ids[0], "unsure")
        held_by_alice = alice.next(4)
        with pytest.raises(httpx.HTTPStatusError) as err:
            bob.label(held_by_alice[0], "positive")
        assert err.value.response.status_code == 409
        assert bob.release() == 3  # bob holds the 3 unlabeled images of his last lease
        assert bob.release() == 0
    assert sorted(e.annotator for e in store.events()) == ["alice"] * 8 + ["bob"] * 8
    assert len({e.id for e in store.events()}) == 16


def test_export_parquet_and_imagefolder(server, store: LabelStore, tmp_path: Path):
    with LabelClient(server.url, "alice") as alice:
        ids = alice.next(6)
        for item_id, label in zip(ids, ["positive", "positive", "negative", "unsure", "negative", "positive"]):
            alice.label(item_id, label)
        alice.undo()  # the last "positive" is withdrawn
    assert export_parquet(store, str(tmp_path / "labels.parquet"), str(tmp_path / "events.parquet")) == 5
    table = pq.read_table(tmp_path / "labels.parquet")
    assert table.column("id").to_pylist() == ids[:5]
    assert table.column("label").to_pylist() == ["positive", "positive", "negative", "unsure", "negative"]
    assert set(table.column("annotator").to_pylist()) == {"alice"}
    events = pq.read_table(tmp_path / "events.parquet")
    assert events.num_rows == 7 and events.column("undone").to_pylist()[-1] is True
    for mode in ("symlink", "copy"):
        counts = export_imagefolder(store, str(tmp_path / mode), mode=mode)
        assert counts == {"positive": 2, "negative": 2, "unsure": 1}
        files = sorted((tmp_path / mode / "positive").iterdir())
        assert len(files) == 2 and all(f.is_symlink() == (mode == "symlink") for f in files)
        Image.open(files[0]).verify()
        uri = store.uri(ids[0])
        assert any(os.path.realpath(f) == uri for f in files) == (mode == "symlink")


def test_token_required_when_shared(store: LabelStore):
    with serve(store.path, share=True, host="127.0.0.1", port=0) as shared:
        assert shared.token and shared.share_url.endswith(f"/?token={shared.token}")
        anon = httpx.Client(base_url=shared.url)
        for method, path in [
            ("GET", "/"),
            ("GET", "/static/app.js"),
            ("GET", "/api/config"),
            ("GET", "/api/progress"),
            ("GET", "/api/labels"),
            ("GET", "/api/image?id=x"),
            ("POST", "/api/next"),
            ("POST", "/api/label"),
            ("POST", "/api/undo"),
        ]:
            assert anon.request(method, path).status_code == 401, path
            assert anon.request(method, path, headers={"Authorization": "Bearer nope"}).status_code == 403, path
        assert anon.get("/login").status_code == 200
        assert anon.post("/login", data={"token": "wrong"}).status_code == 403
        # the shared link sets a cookie and redirects to a URL without the token
        r = anon.get(f"/?token={shared.token}")
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert anon.cookies.get("strata_token") == shared.token
        assert anon.get("/").status_code == 200 and anon.get("/api/config").status_code == 200
        with LabelClient(shared.url, "carol", token=shared.token) as carol:
            assert carol.label(carol.next(1)[0], "positive")["progress"]["labeled"] == 1
        form = httpx.Client(base_url=shared.url)
        assert form.post("/login", data={"token": shared.token}).status_code == 303
        assert form.get("/api/progress").status_code == 200


def test_bad_input_and_path_traversal(server, store: LabelStore):
    http = httpx.Client(base_url=server.url)
    ok = {"annotator": "alice", "id": store.lease("alice", 1)[0], "label": "positive"}
    cases = [
        ("/api/label", b"{not json", 422),
        ("/api/label", b"[]", 422),
        ("/api/label", {**ok, "label": "maybe"}, 422),
        ("/api/label", {**ok, "id": "no/such/id"}, 404),
        ("/api/label", {**ok, "annotator": "../../etc"}, 422),
        ("/api/label", {**ok, "annotator": ""}, 422),
        ("/api/label", {**ok, "extra": 1}, 422),
        ("/api/label", {**ok, "request_id": "x"}, 422),
        ("/api/label", {k: v for k, v in ok.items() if k != "label"}, 422),
        ("/api/next", {"annotator": "alice", "n": 0}, 422),
        ("/api/next", {"annotator": "alice", "n": 10_000}, 422),
        ("/api/undo", {"annotator": "alice"}, 404),
    ]
    for path, body, status in cases:
        r = http.post(path, content=body) if isinstance(body, bytes) else http.post(path, json=body)
        assert r.status_code == status, (path, body, r.text)
    secret = Path(store.path).parent / "secret.jpg"
    secret.write_bytes(Path(store.uri(ok["id"])).read_bytes())
    for probe in [str(secret), "../" * 8 + "etc/passwd", "/etc/passwd", "file:///etc/passwd", ok["id"] + "/../x"]:
        assert http.get("/api/image", params={"id": probe}).status_code == 404, probe
    for probe in [
        "/static/../store.py",
        "/static/%2e%2e%2fstore.py",
        "/static/..%2F..%2Fpipeline%2Flabeler%2Fstore.py",
        "/static/index.html/../app.py",
        "/static/store.py",
    ]:
        r = http.get(probe)
        assert r.status_code == 404 and b"sqlite" not in r.content, probe
    assert http.get("/api/image", params={"id": ok["id"]}).status_code == 200
    assert len(store.events()) == 0


def test_key_bindings_binary_and_multiclass(tmp_path: Path, image_files):
    from pipeline.labeler.routes import key_bindings

    binary = key_bindings(("positive", "negative", "unsure"))
    assert (binary["ArrowRight"], binary["ArrowLeft"], binary["ArrowDown"]) == ("positive", "negative", "unsure")
    multi = LabelStore(tmp_path / "multi.sqlite", labels=["forest", "river", "beach", "unsure"])
    multi.register(*image_files)
    with serve(multi.path, port=0) as server:
        config = httpx.get(f"{server.url}/api/config").json()
    assert config["labels"] == ["forest", "river", "beach", "unsure"]
    assert config["keys"] == {"ArrowDown": "unsure", "1": "forest", "2": "river", "3": "beach", "4": "unsure"}
