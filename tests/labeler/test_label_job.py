"""End to end on real data: `strata label` config -> queue from a manifest -> label over HTTP -> export."""

from __future__ import annotations

import io
import threading
import urllib.parse
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pipeline.labeler import LabelClient
from pipeline.labeler.job import run_label_job
from pipeline.labeler.server import lan_address
from pipeline.rundir import RunDir
from tests.processes import free_port, listen_addresses, start_job, stop, wait_http, wait_line

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def label_cfg(run_dir: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("label", overrides=[f"run_dir={run_dir}", "port=0", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.e2e
def test_label_job_on_ucmerced_manifest(tmp_path: Path, datasets_dir: Path):
    part = sorted((datasets_dir / "ucmerced").glob("part-*.parquet"))[0]
    ids = pq.read_table(part, columns=["id"]).column("id").to_pylist()[:40]
    run = RunDir(str(tmp_path / "run"))
    manifest = pa.table({"id": ids, "uri": [f"{part}#{row}" for row in range(len(ids))], "level_1": list(range(40))})
    Path(run.local()).mkdir(parents=True)
    pq.write_table(manifest, run.local("manifest.parquet"))  # a manifest made elsewhere

    cfg = label_cfg(tmp_path / "run", "action=prepare", "queue.limit=12")
    assert cfg["labeler"]["port"] == 0 and cfg["labeler"]["share"] is False
    run_label_job(run, cfg)
    assert run.marker("label_queue")["queued"] == 12
    run_label_job(run, cfg)  # a rerun with the same config is skipped by its marker
    assert run.marker("label_queue")["queued"] == 12

    ready = threading.Event()
    servers = []
    serve_cfg = label_cfg(tmp_path / "run", "queue.limit=12", "stop_when_done=true", "export.imagefolder=symlink")
    job = threading.Thread(target=run_label_job, args=(run, serve_cfg, lambda s: (servers.append(s), ready.set())))
    job.start()
    assert ready.wait(60)
    labeled = {}
    with LabelClient(servers[0].url, "alice") as alice:
        while len(labeled) < 12:  # the server stops once the last label lands: ask no more after it
            batch = alice.next(4)
            assert batch, labeled
            for item_id in batch:
                Image.open(io.BytesIO(alice.image(item_id))).verify()
                labeled[item_id] = ["positive", "negative", "unsure"][len(labeled) % 3]
                alice.label(item_id, labeled[item_id])
    job.join(60)
    assert not job.is_alive() and len(labeled) == 12

    table = pq.read_table(run.local("labels", "labels.parquet"))
    assert dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist())) == labeled
    assert set(table.column("uri").to_pylist()) <= set(manifest.column("uri").to_pylist())
    tree = Path(run.local("labels", "imagefolder"))
    files = {label: sorted((tree / label).iterdir()) for label in ("positive", "negative", "unsure")}
    assert [len(v) for v in files.values()] == [4, 4, 4]
    for f in files["positive"]:  # Parquet rows cannot be linked: their bytes are copied
        assert not f.is_symlink() and Image.open(f).format == "JPEG"
    assert run.marker("label_export")["labeled"] == 12


@pytest.mark.slow
def test_label_job_process_with_share_binds_all_interfaces_behind_a_token(tmp_path: Path, image_files):
    """`strata label share=true` as a process: all interfaces, a LAN link with a random token that
    every request needs; it stops by itself once the queue is labeled and exports the labels."""
    ids, uris = image_files
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    pq.write_table(pa.table({"id": ids[:8], "uri": uris[:8], "level_1": [0] * 8}), run_dir / "manifest.parquet")
    port = free_port()
    log = tmp_path / "label.log"
    proc = start_job(
        "label",
        f"run_dir={run_dir}",
        "share=true",
        f"port={port}",
        "queue.limit=4",
        "stop_when_done=true",
        "export.imagefolder=copy",
        log=log,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{port}/api/progress", proc, log).status_code == 401
        assert listen_addresses(port) == {"0.0.0.0"}
        share = wait_line(log, "Share on your network: ", proc)[0]
        link = urllib.parse.urlsplit(share.split(": ", 1)[1])
        token = urllib.parse.parse_qs(link.query)["token"][0]
        assert link.hostname == lan_address() and link.port == port and len(token) >= 24
        url = f"http://{link.hostname}:{port}"
        assert httpx.get(f"{url}/api/progress", timeout=10).status_code == 401
        assert httpx.get(f"{url}/api/progress", headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 403
        labeled = {}
        with LabelClient(url, "alice", token=token) as alice:
            while batch := alice.next(4):
                for item_id in batch:
                    labeled[item_id] = "positive" if len(labeled) % 2 else "negative"
                    alice.label(item_id, labeled[item_id])
        assert proc.wait(60) == 0, log.read_text()[-3000:]  # stop_when_done: exits on its own
    finally:
        stop(proc)
    table = pq.read_table(run_dir / "labels" / "labels.parquet")
    assert dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist())) == labeled
    assert len(labeled) == 4 and set(labeled) <= set(ids[:8])
    tree = run_dir / "labels" / "imagefolder"
    assert [len(list((tree / label).iterdir())) for label in ("positive", "negative")] == [2, 2]
    for path in run_dir.rglob("*"):  # the token is printed, never written to the run (run.json, logs)
        if path.is_file() and path.suffix != ".sqlite":
            assert token.encode() not in path.read_bytes(), path
