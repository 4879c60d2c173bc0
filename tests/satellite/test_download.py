"""The downloader against a local WMTS server with faults: retries, failures, resume, composites."""

import os
import zlib

import numpy as np
import pytest
from satconf import CLOUD
from synth import paint_clouds, paint_stripes

from pipeline.progress import read_log
from pipeline.rundir import RunDir
from pipeline.satellite.catalogue import Layer, date_range
from pipeline.satellite.codec import decode_rgb_array
from pipeline.satellite.download import (
    Preprocess,
    TileSpec,
    composite_shards,
    download_scenes,
    fetch_tiles,
    read_shards,
)
from pipeline.satellite.gibs import DownloadReport, TileRequest, WMTSClient
from pipeline.satellite.grid import BBox, make_grid, pixel_window

LAYER = Layer("TEST_TrueColor", "250m", format="jpg")
BBOX = BBox(lat_min=8.8, lat_max=9.2, lon_min=-0.2, lon_max=0.2)  # straddles tiles rows 71-72, cols 159-160
TILES = TileSpec(width=64, height=64, overlap=0, boundary="shift")
# as run_download passes them (composite.enabled, gap fill on)
COMPOSITE = dict(method="median", cloud=CLOUD, nodata=None, image_format="png", quality=95, shard_rows=1024)


def _client(server, **kw):
    # generous for a loaded machine; a "slow" fault is held until the server stops, so it always times out
    args = {
        "timeout_s": 3.0,
        "retries": 3,
        "backoff_s": 0.01,
        "backoff_max_s": 0.05,
        "concurrency": 4,
        "tile_size": 512,
    }
    return WMTSClient(server.base_url, **{**args, **kw})


def _expected_scene(server, date):
    grid = make_grid("epsg4326", "250m")
    win = pixel_window(grid, BBOX, 8)
    mosaic = np.zeros((2 * 512, 2 * 512, 3), np.uint8)
    for r in (71, 72):
        for c in (159, 160):
            mosaic[(r - 71) * 512 : (r - 70) * 512, (c - 159) * 512 : (c - 158) * 512] = decode_rgb_array(
                server.tile_bytes(date, 8, r, c)
            )
    return mosaic[win.y0 - 71 * 512 : win.y1 - 71 * 512, win.x0 - 159 * 512 : win.x1 - 159 * 512], win


def _path(date, row, col):
    return f"{LAYER.name}/{date}/250m/8/{row}/{col}.jpg"


def test_download_with_faults_and_resume(wmts_server, tmp_path):
    d1, d2 = date_range("2021-03-01", "2021-03-02", 1)
    wmts_server.faults = {
        _path(d1, 71, 159): ["500", "500"],
        _path(d1, 71, 160): ["slow"],
        _path(d1, 72, 159): ["truncate"],
        _path(d1, 72, 160): ["garbage"],
        _path(d2, 72, 160): ["500"] * 50,  # never recovers within the retries
    }
    run = RunDir(str(tmp_path / "run"))
    out, cache = str(tmp_path / "images"), str(tmp_path / "cache")
    kw = dict(
        output=out, cache_dir=cache, level=8, tiles=TILES, pre=Preprocess(gap_fill=None), run=run, shard_rows=1024
    )
    summary = download_scenes(_client(wmts_server), LAYER, [d1, d2], BBOX, **kw)

    assert summary["source_tiles"]["fetched"] == 7 and summary["source_tiles"]["failed"] == 1
    # every source tile (fetched or failed) counted in progress.log's final line
    assert read_log(run)[-1].split(" ", 1)[1].startswith("download 8/8 tiles (100%)")
    assert read_log(run)[-1].endswith("fetched=7 cached=0 failed=1")
    assert (
        summary["failed_tiles"][0][0].endswith("/default/2021-03-02/250m/8/72/160.jpg")
        and "HTTP 500" in summary["failed_tiles"][0][1]
    )
    assert wmts_server.requests[_path(d2, 72, 160)] == 4  # 1 + 3 retries
    assert not os.path.exists(os.path.join(cache, _path(d2, 72, 160)))
    for root, _, files in os.walk(cache):  # nothing broken was ever written as a tile
        for f in files:
            assert not f.count(".tmp-")
            assert decode_rgb_array(open(os.path.join(root, f), "rb").read()).shape == (512, 512, 3)

    table = read_shards(out)
    scene, win = _expected_scene(wmts_server, d1)
    rows1 = table.filter(np.array(table.column("date").to_pylist()) == d1)
    assert rows1.num_rows == 9  # 3 x 3 windows of 64 px with shift over ~182 px
    for r in rows1.to_pylist():
        y, x = r["pixel_y"] - win.y0, r["pixel_x"] - win.x0
        np.testing.assert_array_equal(decode_rgb_array(r["image"]), scene[y : y + 64, x : x + 64])
        assert r["lat_max"] - r["lat_min"] == pytest.approx(64 * 0.5625 / 256)
        p = 0.5625 / 256  # the scene snaps outwards to whole pixels
        assert BBOX.lat_min - p <= r["lat_min"] and r["lat_max"] <= BBOX.lat_max + p
    rows2 = np.array(table.column("date").to_pylist()) == d2
    # tiles touching the missing source tile (bottom-right) are left out, the rest are written
    assert 0 < rows2.sum() < 9 and summary["dates"][d2]["dropped_missing"] == 9 - rows2.sum()
    assert run.is_done(f"download-{LAYER.name}-{d1}") and not run.is_done(f"download-{LAYER.name}-{d2}")
    # the failed tile (URL, reason) is recorded in run.json for the person rerunning the job
    recorded = run.read_json("run.json")["download"]
    assert [tuple(t) for t in recorded["failed_tiles"]] == [tuple(t) for t in summary["failed_tiles"]]
    assert recorded["source_tiles"]["failed"] == 1

    before = dict(wmts_server.requests)
    wmts_server.faults = {}
    again = download_scenes(_client(wmts_server), LAYER, [d1, d2], BBOX, **kw)
    assert again["skipped_dates"] == [d1]
    assert again["source_tiles"] == {"fetched": 1, "cached": 3, "failed": 0, "attempts": 1}
    assert read_log(run)[-1].split(" ", 1)[1].startswith("download 4/4 tiles (100%)")  # the pending date only
    changed = {k for k, v in wmts_server.requests.items() if before.get(k) != v}
    assert changed == {_path(d2, 72, 160)}
    table = read_shards(out)
    assert table.num_rows == 18 and len(set(table.column("id").to_pylist())) == 18
    assert run.is_done(f"download-{LAYER.name}-{d2}")
    assert run.read_json("run.json")["download"]["failed_tiles"] == []  # the rerun fetched it


def test_permanent_errors_are_not_retried(wmts_server, tmp_path):
    client = _client(wmts_server)
    bad = TileRequest("TEST_TrueColor", "2021-01-01", "250m", 8, 3, 4, "jpg")
    wmts_server.faults = {bad.relpath: ["garbage"] * 10}
    report = client.download([bad], str(tmp_path))
    assert len(report.failed) == 1 and "undecodable" in report.failed[0][1] and report.attempts == 4
    assert not list(tmp_path.rglob("*.jpg"))


def _defects(date, level, row, col, rgb):
    """Per-date clouds on every tile; a swath-gap stripe on the second date."""
    rng = np.random.default_rng(zlib.crc32(f"{date}/{row}/{col}".encode()))
    out = paint_clouds(rgb, rng, coverage=0.3, scale=24.0)[0]
    if date.endswith("02"):
        out = paint_stripes(out, rng, n=1, width=(20, 30))[0]
    return out


def test_gap_fill_and_composite_over_downloads(real_images, tmp_path):
    from wmts_server import WMTSServer

    server = WMTSServer(real_images, defect=_defects).start()
    clean_server = WMTSServer(real_images)
    try:
        dates = date_range("2021-06-01", "2021-06-05", 1)
        run = RunDir(str(tmp_path / "run"))
        out = str(tmp_path / "images")
        download_scenes(
            _client(server, timeout_s=10),
            LAYER,
            dates,
            BBOX,
            output=out,
            cache_dir=str(tmp_path / "cache"),
            level=8,
            tiles=TILES,
            run=run,
            shard_rows=1024,
        )
        table = read_shards(out)
        assert table.num_rows == 45
        gap = np.array(table.column("gap_filled_fraction").to_pylist())
        on_d2 = np.array(table.column("date").to_pylist()) == dates[1]
        assert gap[~on_d2].max() < 0.01 and gap[on_d2].max() > 0.05
        assert np.mean(table.column("cloud_fraction").to_pylist()) > 0.1

        info = composite_shards(out, str(tmp_path / "composite"), run=run, **COMPOSITE)
        assert info["locations"] == 9
        comp = read_shards(str(tmp_path / "composite"))
        clean, win = _expected_scene(clean_server, "any")
        errors, input_errors = [], []
        for r in comp.to_pylist():
            y, x = r["pixel_y"] - win.y0, r["pixel_x"] - win.x0
            truth = clean[y : y + 64, x : x + 64].astype(float)
            errors.append(np.abs(decode_rgb_array(r["image"]) - truth).mean())
        for r in table.to_pylist():
            y, x = r["pixel_y"] - win.y0, r["pixel_x"] - win.x0
            input_errors.append(
                np.abs(decode_rgb_array(r["image"]) - clean[y : y + 64, x : x + 64].astype(float)).mean()
            )
        # JPEG (q95) round trips on the server side are part of the error budget
        assert np.mean(errors) < 4.0 and np.mean(errors) < 0.15 * np.mean(input_errors), (errors, np.mean(input_errors))
        before = run.marker("composite")["finished_at"]
        assert (
            composite_shards(out, str(tmp_path / "composite"), run=run, **COMPOSITE) == info
        )  # resumed, not recomputed
        assert run.marker("composite")["finished_at"] == before
    finally:
        server.stop()


def test_fetch_tiles_reports_each_chunk_to_progress_log(tmp_path):
    class Client:
        concurrency = 1  # chunks of 64 tiles

        def __init__(self) -> None:
            self.calls: list[int] = []

        def download(self, requests, cache_dir):
            self.calls.append(len(requests))
            return DownloadReport(
                fetched=list(requests[1:]), failed=[(requests[0], "HTTP 500")], attempts=len(requests)
            )

    client, run = Client(), RunDir(str(tmp_path / "run"))
    reqs = [TileRequest("layer", "2021-03-01", "250m", 8, 0, c) for c in range(100)]
    report = fetch_tiles(client, reqs + reqs[:5], str(tmp_path / "cache"), run=run)  # repeats fetched once
    assert client.calls == [64, 36] and len(report.fetched) == 98 and len(report.failed) == 2
    lines = [line.split(" ", 1)[1] for line in read_log(run)]
    assert lines[0].startswith("download 64/100 tiles (64%)") and lines[0].endswith("fetched=63 cached=0 failed=1")
    assert lines[-1].startswith("download 100/100 tiles (100%)") and report.attempts == 100
