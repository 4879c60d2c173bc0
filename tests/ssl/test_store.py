"""The SSL model store: register / index / lookup, the resolution choice, and embed.store wiring."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.ssl.checkpoint import save_checkpoint
from pipeline.ssl.store import (
    checkpoint_path,
    input_resolution,
    parse_resolution,
    read_index,
    register,
    resolve_store_checkpoint,
    select,
)
from pipeline.ssl.train import build_model, checkpoint_meta

SSL = {
    "method": "simclr",
    "image_size": 32,
    "backbone": {"name": "small_cnn", "width": 8, "blocks_per_stage": 1},
    "head": {"hidden_dim": 32, "output_dim": 16, "temperature": 0.5},
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(SSL)
    path = str(tmp_path_factory.mktemp("ckpt"))
    save_checkpoint(path, model, checkpoint_meta(SSL, model, 3, [{"epoch": 3, "loss": 2.5}]))
    return path


def test_parse_resolution():
    assert parse_resolution("250m") == 250.0 and parse_resolution("1km") == 1000.0
    assert parse_resolution("15.625m") == 15.625 and parse_resolution(30) == 30.0 and parse_resolution("30") == 30.0
    assert parse_resolution(None) is None and parse_resolution("GoogleMapsCompatible_Level9") is None


def test_register_and_lookup(checkpoint, tmp_path):
    store = str(tmp_path / "store")
    entry = register(store, checkpoint, resolution="250m", product="MODIS_Terra_CorrectedReflectance_TrueColor")
    assert entry["key"] == "simclr-MODIS_Terra_CorrectedReflectance_TrueColor-250m"
    assert (entry["resolution_m"], entry["dim"], entry["output_dim"], entry["epochs"], entry["loss"]) == (
        250.0, 64, 16, 3, 2.5,
    )  # fmt: skip
    register(store, checkpoint, resolution="1km", product="MODIS_Terra_Land_Surface_Temp_Day")
    again = register(store, checkpoint, resolution="250m", product="MODIS_Terra_CorrectedReflectance_TrueColor")
    index = read_index(store)
    assert [m["key"] for m in index] == [
        "simclr-MODIS_Terra_Land_Surface_Temp_Day-1km",
        "simclr-MODIS_Terra_CorrectedReflectance_TrueColor-250m",
    ]  # the same key registered again replaces its entry
    assert json.load(open(tmp_path / "store" / "index.json"))["format_version"] == 1
    path = checkpoint_path(store, again)
    assert (tmp_path / "store" / again["path"] / "model.pt").exists() and path.endswith(again["path"])
    from pipeline.ssl.checkpoint import load_backbone

    _, dim, meta = load_backbone(path)
    assert dim == 64 and meta["method"] == "simclr"


def test_nearest_resolution_choice(checkpoint, tmp_path):
    store = str(tmp_path / "store")
    with pytest.raises(ValueError, match="is empty: register a checkpoint with `strata pretrain ssl.store="):
        select(store, "250m")
    for res in ("31.25m", "250m", "1km"):
        register(store, checkpoint, resolution=res, product="P")
    best, why = select(store, "500m")  # 500 m is 2x from 250 m and 2x from 1 km: equal on a log scale...
    assert best["resolution"] in ("250m", "1km")
    assert select(store, "300m")[0]["resolution"] == "250m"
    assert select(store, "550m")[0]["resolution"] == "1km"  # log-nearest (|log 550/1000| < |log 550/250|)
    best, why = select(store, 30)
    assert best["resolution"] == "31.25m"
    assert "nearest to the input's 30 (30 m/px)" in why and "others: 1km, 250m" in why
    # a model trained on the input's product wins over other products
    register(store, checkpoint, resolution="500m", product="Q")
    assert select(store, "500m", product="P")[0]["product"] == "P"
    assert select(store, "500m")[0]["key"] == "simclr-Q-500m"
    best, why = select(store, None)
    assert "resolution is unknown" in why and best["key"] == "simclr-Q-500m"  # the most recent
    with pytest.raises(ValueError, match="no simsiam checkpoint"):
        select(store, "250m", method="simsiam")


def test_embed_store_picks_by_the_input_resolution_column(checkpoint, tmp_path, caplog):
    store = str(tmp_path / "store")
    for res in ("250m", "1km"):
        register(store, checkpoint, resolution=res, product="P")
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    pq.write_table(
        pa.table({"id": ["a", "b"], "resolution": ["1km", "1km"], "product": ["P", "P"]}), tiles / "p.parquet"
    )
    assert input_resolution({"path": str(tiles)}) == ("1km", "P")
    embed = {"backbone": "ssl", "checkpoint": None, "store": store}
    with caplog.at_level(logging.INFO):
        out = resolve_store_checkpoint(embed, {"path": str(tiles)}, logging.getLogger("t"))
    assert out["checkpoint"].endswith("simclr-P-1km") and "chose simclr-P-1km" in caplog.text
    assert resolve_store_checkpoint({**embed, "resolution": "200m"}, {"path": str(tiles)})["checkpoint"].endswith(
        "simclr-P-250m"
    )  # an explicit embed.resolution wins over the column
    pq.write_table(pa.table({"id": ["c"], "resolution": ["250m"], "product": ["P"]}), tiles / "q.parquet")
    with pytest.raises(ValueError, match="mixes resolutions"):
        resolve_store_checkpoint(embed, {"path": str(tiles)})
    with pytest.raises(ValueError, match="use it with embed=ssl"):
        resolve_store_checkpoint({**embed, "backbone": "resnet18"}, {"path": str(tiles)})
    assert resolve_store_checkpoint({"backbone": "ssl", "store": None}, {}) == {"backbone": "ssl", "store": None}


def test_pretrain_registers_with_the_input_columns(checkpoint, tmp_path):
    from pipeline.ssl.train import register_in_store

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    pq.write_table(pa.table({"id": ["a"], "resolution": ["250m"], "product": ["VIIRS"]}), tiles / "p.parquet")
    registry = {"store": str(tmp_path / "store"), "resolution": None, "product": None}
    entry = register_in_store(checkpoint, {"path": str(tiles)}, registry, "runs/x")
    assert (entry["key"], entry["resolution_m"], entry["run_dir"]) == ("simclr-VIIRS-250m", 250.0, "runs/x")
    entry = register_in_store(checkpoint, {"path": str(tiles)}, {**registry, "resolution": "1km"}, "runs/x")
    assert entry["key"] == "simclr-VIIRS-1km" and len(read_index(registry["store"])) == 2


@pytest.mark.slow
def test_embed_step_with_store_and_dim(checkpoint, tmp_path):
    """`run_embed` (12 tiles: in process) on GIBS-like Parquet tiles: the store's 1 km checkpoint is chosen from
    the `resolution` column and recorded, and embed.dim=4 reduces the written embeddings."""
    import io

    import numpy as np
    from PIL import Image

    from pipeline.embed.stage import run_embed
    from pipeline.rundir import RunDir

    store = str(tmp_path / "store")
    for res in ("250m", "1km"):
        register(store, checkpoint, resolution=res, product="P")
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(12):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    pq.write_table(
        pa.table(
            {"id": [f"t{i}" for i in range(12)], "image": blobs, "resolution": ["1km"] * 12, "product": ["P"] * 12}
        ),
        tiles / "part-0.parquet",
    )
    run = RunDir(str(tmp_path / "run"))
    embed = {"backbone": "ssl", "store": store, "dim": 4, "pool_size": 1, "batch_size": 8}
    counts = run_embed(run, {"path": str(tiles)}, embed)
    assert counts["kept"] == 12 and counts["dim"] == 4 and counts["reduction"]["from"] == 64
    recorded = run.read_json("run.json")
    assert (
        recorded["model_store"]["key"] == "simclr-P-1km"
        and "nearest to the input's 1km" in recorded["model_store"]["reason"]
    )
    table = pq.read_table(run.path("embeddings"))
    assert (
        table.schema.field("embedding").type.list_size == 4 and table.column("resolution").to_pylist() == ["1km"] * 12
    )
