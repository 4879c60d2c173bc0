"""The search server's bounds: tiles, query pixels, body size, JSON depth, worker pool, time limit,
client disconnect, Host allowlist, token beyond loopback, no server paths, offline /docs."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipeline.search.app import ServeSettings, create_app
from pipeline.search.pool import WorkPool
from pipeline.search.service import QueryLimits, _decode, image_to_bytes
from pipeline.security import access_token

ID = "forest/im007.png"


def _client(service, **overrides) -> TestClient:
    return TestClient(create_app(service, ServeSettings.defaults(**overrides)), base_url="http://127.0.0.1:8000")


@pytest.fixture(scope="module")
def client(image_service):
    with _client(image_service) as c:
        yield c


class StubService:
    """Stands in for SearchService: each query waits until released or cancelled, and records it."""

    limits = None

    def __init__(self):
        self.release = threading.Event()
        self.cancelled_seen = threading.Event()
        self.started = threading.Event()

    def search(self, cancelled, **_):
        self.started.set()
        while not self.release.wait(0.02):
            if cancelled():
                self.cancelled_seen.set()
                raise RuntimeError("stopped")
        return {
            "results": [{"rank": 0, "id": "a", "score": 1.0, "uri": "/srv/secret/a.png"}],
            "k": 1,
            "took_ms": 0.0,
            "query": {},
        }

    def check_query(self, **_):
        return 0

    def describe(self):
        return {}


def test_tile_limits_answer_400_naming_the_limit(client):
    r = client.post("/search", json={"id": ID, "tiles": "16x16,16x16,16x16,16x16"})
    assert r.status_code == 400 and "max_grids" in r.json()["detail"]
    r = client.post("/search", json={"id": ID, "tiles": "4x4,2x2"})
    assert r.status_code == 400 and "20 tiles" in r.json()["detail"] and "limit is 16" in r.json()["detail"]
    assert client.post("/search", json={"id": ID, "tiles": "1x1,2x2,3x3", "k": 3}).status_code == 200


def test_query_image_pixels_are_checked_before_decoding(client):
    big = io.BytesIO()
    Image.new("1", (5000, 5000)).save(big, format="PNG")  # 25 MP in a few kB: a small upload, a large decode
    r = client.post("/search", files={"image": ("big.png", big.getvalue(), "image/png")})
    assert r.status_code == 413 and "max_query_pixels" in r.json()["detail"]


def test_large_jpeg_queries_decode_at_reduced_scale():
    jpeg = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(jpeg, format="JPEG")
    limits = QueryLimits(max_query_pixels=16_000_000, max_query_side=512, max_tiles=4, max_grids=1)
    img = _decode(jpeg.getvalue(), limits)
    assert max(img.size) == 512 and img.mode == "RGB"


@pytest.mark.parametrize("where", ["body", "filters", "vector"])
def test_deep_json_is_a_400_not_a_500(client, where):
    deep = "[" * 50_000 + "]" * 50_000
    if where == "body":
        r = client.post("/search", content=deep.encode(), headers={"content-type": "application/json"})
    else:
        r = client.post("/search", data={"id": ID, where: deep})
    assert r.status_code == 400, r.text
    assert "max_json_depth" in r.json()["detail"]
    shallow = client.post("/search", data={"id": ID, "filters": json.dumps({"label": {"in": ["forest"]}})})
    assert shallow.status_code == 200


def test_body_size_limit(image_service):
    with _client(image_service, max_body_mb=0.01) as c:
        r = c.post("/search", files={"image": ("q.png", b"\0" * 20_000, "image/png")})
        assert r.status_code == 413 and "max_body_mb" in r.json()["detail"]
        r = c.post("/search", content=(b"x" * 20_000 for _ in range(1)), headers={"content-type": "application/json"})
        assert r.status_code == 413  # no Content-Length: counted while streaming


def test_full_pool_answers_503_at_once():
    service = StubService()
    app = create_app(service, ServeSettings.defaults(workers=1, queue=0))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        blocker = app.state.pools["index"].submit(lambda: service.release.wait(10))
        try:
            r = c.post("/search", json={"id": "a"})
            assert r.status_code == 503 and "limits.workers" in r.json()["detail"] and r.headers["retry-after"] == "1"
        finally:
            service.release.set()
            blocker.result(10)
        assert c.post("/search", json={"id": "a"}).status_code == 200


def test_work_pool_admits_workers_plus_queue_and_runs_cheap_jobs_first():
    pool, gate, order = WorkPool(1, 3), threading.Event(), []
    jobs = [pool.submit(lambda: gate.wait(10))]
    jobs += [pool.submit(lambda c=c: order.append(c), cost=c) for c in (16, 0, 4)]
    assert all(jobs) and pool.submit(lambda: None) is None
    gate.set()
    [j.result(10) for j in jobs]
    assert order == [0, 4, 16]
    assert pool.submit(lambda: 1).result(10) == 1


def test_request_time_limit_stops_the_query():
    service = StubService()
    with TestClient(
        create_app(service, ServeSettings.defaults(request_timeout_s=0.3)), base_url="http://127.0.0.1"
    ) as c:
        r = c.post("/search", json={"id": "a"})
    assert r.status_code == 503 and "request_timeout_s" in r.json()["detail"]
    assert service.cancelled_seen.wait(5)


def test_client_disconnect_abandons_the_query():
    import uvicorn

    service = StubService()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, ServeSettings.defaults()), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        body = b'{"id": "a"}'
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert service.started.wait(5)
        assert service.cancelled_seen.wait(5)  # well before request_timeout_s
    finally:
        service.release.set()
        server.should_exit = True
        thread.join(10)


def test_host_header_allowlist(image_service):
    with TestClient(create_app(image_service, ServeSettings.defaults()), base_url="http://evil.example") as c:
        r = c.get("/healthz")
        assert r.status_code == 421 and "allowed_hosts" in r.json()["detail"]
        assert c.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/healthz", headers={"host": "[::1]:8000"}).status_code == 200
    with TestClient(
        create_app(image_service, ServeSettings.defaults(allowed_hosts=["search.example.org"])),
        base_url="http://search.example.org",
    ) as c:
        assert c.get("/healthz").status_code == 200


def test_token_required_beyond_loopback(image_service):
    with pytest.raises(ValueError, match="requires a token"):
        create_app(image_service, ServeSettings.defaults(host="0.0.0.0"))
    token, generated = access_token("0.0.0.0", None)
    assert generated and len(token) >= 24
    assert access_token("127.0.0.1", None) == (None, False) and access_token("::1", "t") == ("t", False)
    settings = ServeSettings.defaults(host="0.0.0.0", token=token)
    with TestClient(create_app(image_service, settings), base_url="http://192.168.1.20:8000") as c:
        assert c.get("/healthz").status_code == 401
        assert c.get("/healthz", headers={"authorization": "Bearer nope"}).status_code == 403
        assert c.get("/healthz", headers={"authorization": f"Bearer {token}"}).status_code == 200
        r = c.get(f"/?token={token}", follow_redirects=False)
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        c.cookies.set("strata_search_token", token)
        assert c.post("/search", json={"id": ID, "k": 2}).status_code == 200


def test_hits_carry_ids_not_server_paths(image_service):
    with _client(image_service) as c:
        hits = c.post("/search", json={"id": ID, "k": 3}).json()["results"]
        assert hits and all("uri" not in h for h in hits)
        assert "/" not in json.dumps(hits).replace(ID, "").replace("forest/", "").replace("river/", "").replace(
            "field/", ""
        )
    with _client(image_service, expose_uri=True) as c:
        assert all(h["uri"].startswith("/") for h in c.post("/search", json={"id": ID, "k": 3}).json()["results"])


def test_docs_work_offline_or_are_off(image_service, client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/search" in page.text
    assert "<script" not in page.text and "http://" not in page.text and "https://" not in page.text
    with _client(image_service, docs=False) as c:
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404


def test_ordinary_queries_still_work(client, image_service):
    png = image_to_bytes(image_service.test_images[12])
    r = client.post("/search", files={"image": ("q.png", png, "image/png")}, data={"k": "4", "tiles": "2x2"})
    assert r.status_code == 200 and r.json()["results"]
