"""`strata serve` as a process: where it binds, what it asks of clients, and its upload limit.

The run holds the EfficientNet-Lite0 embeddings of a few generated images (made in this process)
and their index; the server embeds uploaded query images itself. Each test starts the server on a
free port, polls until it answers, makes real HTTP requests and stops it with SIGTERM."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.labeler.server import lan_address
from pipeline.rundir import RunDir
from tests.processes import free_port, listen_addresses, start_job, stop, wait_http, wait_line
from tests.search.conftest import synthetic_images

pytestmark = pytest.mark.slow
EMBED = {"backbone": "efficientnet_lite0", "image_size": 64}


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def indexed_run(tmp_path_factory) -> tuple[Path, list[str], list[bytes]]:
    from pipeline.embed.embedder import Embedder
    from pipeline.search.build import build_run_index

    root = tmp_path_factory.mktemp("serve")
    images, labels = synthetic_images(12, seed=3)
    pngs = [_png(im) for im in images]
    ids = [f"{labels[i]}/im{i:02d}.png" for i in range(len(images))]
    uris = []
    for item_id, data in zip(ids, pngs):
        path = root / "images" / item_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        uris.append(str(path))
    run = RunDir(str(root / "run"))
    x = Embedder(EMBED).embed_bytes(pngs)
    write_parquet_atomic(
        pa.table({"id": ids, "uri": uris, "label": labels, "embedding": embeddings_to_arrow(x)}),
        run.path("embeddings", "part-00000.parquet"),
    )
    run.update_run_json(config={"embed": EMBED})  # what `strata embed` records
    build_run_index(run, {"kind": "flat"})
    return root / "run", ids, pngs


def _serve(run_dir: Path, tmp_path: Path, *overrides: str):
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    proc = start_job("serve", f"run_dir={run_dir}", f"port={port}", "faiss_threads=1", *overrides, log=log)
    return proc, port, log


def test_serve_binds_loopback_by_default_and_refuses_a_too_large_upload(indexed_run, tmp_path):
    run_dir, ids, pngs = indexed_run
    proc, port, log = _serve(run_dir, tmp_path, "max_upload_mb=0.05")  # 52,428 bytes; the query PNGs are far smaller
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_http(f"{url}/healthz", proc, log).status_code == 200  # no token on loopback
        assert listen_addresses(port) == {"127.0.0.1"}
        lan = lan_address()
        if lan != "127.0.0.1":  # the machine's own network address does not reach the server
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{lan}:{port}/healthz", timeout=5)

        # an upload under the limit is embedded by the server: the image itself is the first hit
        found = httpx.post(
            f"{url}/search", files={"image": ("q.png", pngs[5], "image/png")}, data={"k": "3"}, timeout=60
        )
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["id"] == ids[5]
        assert found.json()["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)

        too_large = 52_429 + 1000
        refused = httpx.post(
            f"{url}/search", files={"image": ("big.png", b"\x89PNG" + bytes(too_large), "image/png")}, timeout=60
        )
        assert refused.status_code == 413
        assert refused.json()["detail"] == "image larger than 52428 bytes (serve max_upload_mb)"
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # still serving
    finally:
        stop(proc)
    assert "Application shutdown complete" in log.read_text()  # SIGTERM shuts down cleanly


def test_serve_beyond_loopback_generates_a_token_and_requires_it(indexed_run, tmp_path):
    run_dir, ids, _ = indexed_run
    proc, port, log = _serve(run_dir, tmp_path, "host=0.0.0.0")
    try:
        anonymous = wait_http(f"http://127.0.0.1:{port}/healthz", proc, log)
        assert anonymous.status_code == 401 and "access token required" in anonymous.json()["detail"]
        assert listen_addresses(port) == {"0.0.0.0"}
        token = wait_line(log, "access token", proc)[1].strip()
        assert len(token) >= 32

        for host in {"127.0.0.1", lan_address()}:  # reachable on every interface, with the token only
            url = f"http://{host}:{port}"
            assert httpx.post(f"{url}/search", json={"id": ids[0], "k": 2}, timeout=30).status_code == 401
            wrong = httpx.post(f"{url}/search", json={"id": ids[0], "k": 2}, headers={"Authorization": "Bearer x"})
            assert wrong.status_code == 403
            hits = httpx.post(
                f"{url}/search", json={"id": ids[0], "k": 2}, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            assert hits.status_code == 200 and hits.json()["results"][0]["id"] == ids[0]
        # the link printed for browsers sets a cookie that authenticates the page's requests
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as browser:
            assert browser.get(f"/?token={token}").status_code == 303
            assert browser.get("/healthz").status_code == 200
    finally:
        stop(proc)
    # shown once on the terminal, never written to the run directory (run.json, Hydra logs)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
