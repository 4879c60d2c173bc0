"""End-to-end: `strata download` against the local WMTS server, then `strata curate` on its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_download_job_then_curate(ray_session, wmts_server, tmp_path):
    from pipeline.curate import run_curate
    from pipeline.rundir import RunDir

    dl_dir = tmp_path / "download"
    overrides = [
        f"run_dir={dl_dir}",
        f"download.base_url={wmts_server.base_url}",
        "download.layer=TEST_TrueColor",
        "+download.layer_overrides.tile_matrix_set=250m",
        "download.level=8",
        "download.dates.start=2021-05-01",
        "download.dates.end=2021-05-03",
        "download.bbox.lat_min=8.8",
        "download.bbox.lat_max=9.2",
        "download.bbox.lon_min=-0.2",
        "download.bbox.lon_max=0.2",
        "download.concurrency=4",
        "download.timeout_s=10",
        "satellite.tiles.width=64",
        "satellite.tiles.height=64",
        "composite.enabled=true",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.download", *overrides], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = dl_dir / "images"
    shards = sorted(images.glob("part-*.parquet"))
    assert len(shards) == 3
    assert pq.read_table(shards[0]).column_names[:4] == ["id", "location", "image", "date"]
    assert pq.read_table(dl_dir / "composite").num_rows == 9
    # rerun: every date is marked done, nothing is fetched again
    before = sum(wmts_server.requests.values())
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.download", *overrides], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and sum(wmts_server.requests.values()) == before

    run_dir = tmp_path / "curate"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "curate",
            overrides=[
                f"input.path={images}",
                f"run_dir={run_dir}",
                "preprocess=satellite",
                "embed.image_size=64",
                "kmeans.n_clusters=[4,2]",
                "kmeans.sample_size=[2,1]",
                "kmeans.n_resampling_steps=[1,1]",
                "sample.target_size=10",
                "dedup.enabled=false",
            ],
        )  # tiles cut from a few source images overlap
    run_curate(RunDir(str(run_dir)), OmegaConf.to_container(cfg, resolve=True))
    manifest = pq.read_table(run_dir / "manifest.parquet")
    # 9 dates x several tiles is far more than 10 inputs, and multiplier 1 never repeats one
    assert manifest.num_rows == sum(manifest.column("multiplicity").to_pylist()) == 10
    for col in ("date", "product", "lat_min", "lon_max", "gap_filled_fraction", "cloud_fraction"):
        assert col in manifest.column_names, manifest.column_names
    ids = set(pq.read_table(images, columns=["id"]).column("id").to_pylist())
    assert set(manifest.column("id").to_pylist()) <= ids
