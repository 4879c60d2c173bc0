"""End to end on real data: `strata label` config -> queue from a manifest -> label over HTTP -> export."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pipeline.labeler import LabelClient
from pipeline.labeler.job import run_label_job
from pipeline.rundir import RunDir

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
        while batch := alice.next(4):
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
