"""GIBS layer discovery: the capabilities document (real GIBS structure, served from loopback),
its cache, `action=list`, and downloading a listed layer without overrides (with a GIF animation)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pipeline.rundir import RunDir
from pipeline.satellite.capabilities import capabilities_url, load_capabilities, parse_capabilities
from pipeline.satellite.catalogue import Layer
from pipeline.satellite.download import covered_dates, list_layers, read_shards, run_download

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "gibs_capabilities_epsg4326.xml"


@pytest.fixture(scope="module")
def caps():
    return parse_capabilities(FIXTURE.read_bytes(), "epsg4326")


def test_parse_layers_times_sets_and_resolutions(caps):
    assert len(caps.layers) == 17
    terra = caps.layers["MODIS_Terra_CorrectedReflectance_TrueColor"]
    assert terra.title == "Corrected Reflectance (True Color, MODIS, Terra)"
    assert (terra.start, terra.end, terra.periods) == ("2000-02-24", "2024-01-10", ("P1D",))
    assert terra.tile_matrix_sets == ("250m",) and terra.formats == ("image/jpeg",)
    # deepest 250m matrix: 0.5625 / 2**8 degrees per pixel, in metres at the equator
    assert caps.resolutions_m["250m"] == pytest.approx(0.5625 / 256 * 111319.49, rel=1e-6)
    assert caps.resolutions_m["2km"] == pytest.approx(8 * caps.resolutions_m["250m"])
    ndvi = caps.layers["MODIS_Terra_NDVI_8Day"]
    assert len(ndvi.times) == 3 and ndvi.periods == ("P8D",) and ndvi.covers("2001-06-10")
    assert not caps.layers["BlueMarble_NextGeneration"].times  # static layer
    layer = caps.to_layer("VIIRS_SNPP_DayNightBand_ENCC")
    assert (layer.tile_matrix_set, layer.format, layer.start_date) == ("500m", "png", "2016-11-30")
    assert layer.url_suffix == "default/{date}/{tile_matrix_set}/{level}/{row}/{col}.{ext}"
    assert "{date}" not in caps.to_layer("BlueMarble_NextGeneration").url_suffix
    with pytest.raises(ValueError, match="no JPEG/PNG"):
        caps.to_layer("OrbitTracks_Terra_Descending")
    with pytest.raises(KeyError, match="MODIS_Terra_CorrectedReflectance_TrueColor"):
        caps.to_layer("MODIS_Terra_CorrectedReflectance_TrueColour")


def test_search_matches_all_words_in_identifier_or_title(caps):
    found = [la.identifier for la in caps.search("corrected reflectance terra")]
    assert found == [
        "MODIS_Terra_CorrectedReflectance_Bands367",
        "MODIS_Terra_CorrectedReflectance_Bands721",
        "MODIS_Terra_CorrectedReflectance_TrueColor",
    ]
    assert [la.identifier for la in caps.search("NIGHTTIME")] == ["VIIRS_SNPP_DayNightBand_ENCC"]
    assert len(caps.search(None)) == 17


def test_dates_outside_coverage(caps):
    layer = caps.to_layer("VIIRS_SNPP_CorrectedReflectance_TrueColor")
    assert covered_dates(layer, ["2015-11-23", "2015-11-24"]) == ["2015-11-24"]
    with pytest.raises(ValueError, match="coverage 2015-11-24..2024-01-10"):
        covered_dates(layer, ["2010-01-01"])
    assert covered_dates(caps.to_layer("BlueMarble_NextGeneration"), ["2020-01-01", "2020-01-02"]) == ["2020-01-01"]
    assert covered_dates(Layer("X"), ["1990-01-01"]) == ["1990-01-01"]  # no known coverage: kept


def _load(url, cache_dir, **kw):
    """``load_capabilities`` with the ``conf/download/gibs.yaml`` values (``kw`` overrides them)."""
    return load_capabilities(url, cache_dir, **{"max_age_hours": 24, "timeout_s": 30, "projection": "epsg4326", **kw})


def test_capabilities_cache_max_age_and_stale_fallback(wmts_server, tmp_path):
    wmts_server.capabilities = FIXTURE.read_bytes()
    url = capabilities_url(wmts_server.base_url, "epsg4326")
    cache = str(tmp_path / "caps")
    assert len(_load(url, cache).layers) == 17
    assert len(_load(url, cache).layers) == 17
    assert wmts_server.requests["capabilities"] == 1  # the second read came from the cache
    _load(url, cache, max_age_hours=0)
    assert wmts_server.requests["capabilities"] == 2  # too old: fetched again
    wmts_server.stop()
    assert len(_load(url, cache, max_age_hours=0, timeout_s=2).layers) == 17  # stale copy
    with pytest.raises(RuntimeError, match="cannot read GIBS capabilities"):
        _load(url, str(tmp_path / "empty"), timeout_s=2)


def _overrides(server, tmp_path, *extra):
    return [
        f"run_dir={tmp_path / 'run'}",
        f"download.base_url={server.base_url}",
        f"download.capabilities.cache_dir={tmp_path / 'caps'}",
        *extra,
    ]


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return OmegaConf.to_container(compose("download", overrides=overrides), resolve=True)


def test_list_action(wmts_server, tmp_path):
    wmts_server.capabilities = FIXTURE.read_bytes()
    text = list_layers(_cfg(_overrides(wmts_server, tmp_path, "download.search=land surface")))
    lines = text.splitlines()
    assert lines[0] == "1 of 17 layers (GIBS capabilities):" and lines[1].split()[:2] == ["layer", "title"]
    row = lines[2]
    for value in ("MODIS_Terra_Land_Surface_Temp_Day", "Land Surface Temperature", "2000-03-05..2024-01-09 P1D"):
        assert value in row
    assert "978 m" in row and "png" in row and row.rstrip().endswith("1km")
    wmts_server.capabilities = None  # unreadable and nothing cached: the built-in catalogue is listed
    offline = list_layers(_cfg(_overrides(wmts_server, tmp_path / "b", "download.search=VIIRS")))
    assert offline.startswith("3 of 6 layers (built-in catalogue")


def test_list_job_as_a_process(wmts_server, tmp_path):
    wmts_server.capabilities = FIXTURE.read_bytes()
    args = _overrides(wmts_server, tmp_path, "action=list", "download.search=truecolor viirs")
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.download", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 of 17 layers" in proc.stdout and "VIIRS_NOAA20_CorrectedReflectance_TrueColor" in proc.stdout
    assert not (tmp_path / "run" / "run.json").exists()  # listing records no run


def test_listed_layer_downloads_without_overrides_and_animates(wmts_server, tmp_path):
    wmts_server.capabilities = FIXTURE.read_bytes()
    layer = "MODIS_Terra_CorrectedReflectance_Bands367"  # not in the built-in catalogue
    cfg = _cfg(
        _overrides(
            wmts_server,
            tmp_path,
            f"download.layer={layer}",
            "download.level=8",
            "download.dates.start=2021-05-01",
            "download.dates.end=2021-05-03",
            "download.bbox={lat_min: 8.8, lat_max: 9.2, lon_min: -0.2, lon_max: 0.2}",
            "download.concurrency=4",
            "download.timeout_s=10",
            "satellite.tiles.width=64",
            "satellite.tiles.height=64",
            "animate=gif",
        )
    )
    summary = run_download(cfg, RunDir(cfg["run_dir"]))
    assert summary["source_tiles"]["failed"] == 0 and summary["source_tiles"]["fetched"] == 12
    assert any(k.startswith(f"{layer}/2021-05-02/250m/8/") for k in wmts_server.requests)
    table = read_shards(cfg["output"])
    assert table.num_rows == 27 and set(table.column("product").to_pylist()) == {layer}
    gifs = sorted((tmp_path / "run" / "animations").glob("*.gif"))
    assert len(gifs) == 9 and summary["animations"]["count"] == 9
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == 3 and gif.size == (64, 64)
        gif.seek(1)
        frame = np.asarray(gif.convert("RGB"))
    label = frame[:16]  # the date label: white text on a black box
    assert (label.min(axis=-1) >= 200).sum() >= 20 and (label.max(axis=-1) <= 16).sum() >= 50


def test_download_falls_back_to_the_built_in_catalogue(wmts_server, tmp_path, caplog):
    """No capabilities (the server answers 400): a catalogue layer still downloads, with a warning."""
    cfg = _cfg(
        _overrides(
            wmts_server,
            tmp_path,
            "download.layer=VIIRS_SNPP_CorrectedReflectance_TrueColor",
            "download.level=8",
            "download.dates.start=2021-05-01",
            "download.dates.end=2021-05-01",
            "download.bbox={lat_min: 8.8, lat_max: 9.2, lon_min: -0.2, lon_max: 0.2}",
            "download.timeout_s=10",
            "satellite.tiles.width=64",
            "satellite.tiles.height=64",
        )
    )
    summary = run_download(cfg, RunDir(cfg["run_dir"]))
    assert summary["source_tiles"]["fetched"] == 4 and "animations" not in summary
    assert "falling back to the built-in catalogue" in caplog.text
    with pytest.raises(KeyError, match="action=list"):
        run_download({**cfg, "download": {**cfg["download"], "layer": "NOT_A_LAYER"}}, RunDir(cfg["run_dir"]))
