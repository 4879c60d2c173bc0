"""Satellite stages on Ray Data actor pools, and the tiling stage's row expansion."""

import numpy as np
import pyarrow as pa
import pytest
from satconf import CLOUD, GAP_STAGE, TILES
from synth import paint_stripes

from pipeline.satellite.codec import decode_rgb_array, encode_array
from pipeline.satellite.stages import CloudMaskStage, GapFillStage, TilingStage
from pipeline.satellite.tiling import cut_tiles, tile_windows


def test_tiling_stage_rows_and_bounds(real_images):
    image = real_images[0][:200, :150]
    batch = pa.table(
        {
            "id": ["scene", "bad"],
            "image": [encode_array(image, "png", 95), b"xx"],
            "lat_min": [10.0, 0.0],
            "lat_max": [12.0, 1.0],
            "lon_min": [20.0, 0.0],
            "lon_max": [21.5, 1.0],
            "date": ["2020-01-01", "2020-01-02"],
        }
    )
    out = TilingStage(**{**TILES, "width": 64, "height": 64, "overlap": 16, "boundary": "pad"})(batch)
    windows = tile_windows(200, 150, 64, 64, 16, "pad")
    tiles, pad = cut_tiles(image, windows, 0)
    assert out.num_rows == len(windows) + 1  # the undecodable row passes through for the embed stage to reject
    rows = out.to_pylist()
    for row, (y0, x0, y1, x1), tile, p in zip(rows, windows, tiles, pad):
        assert row["id"] == f"scene#y{y0}_x{x0}" and row["source_id"] == "scene" and row["date"] == "2020-01-01"
        np.testing.assert_array_equal(decode_rgb_array(row["image"]), tile)
        assert row["pad_fraction"] == pytest.approx(p)
        assert row["lat_max"] == pytest.approx(12.0 - y0 / 200 * 2.0) and row["lat_min"] == pytest.approx(
            12.0 - y1 / 200 * 2.0
        )
        assert row["lon_min"] == pytest.approx(20.0 + x0 / 150 * 1.5) and row["lon_max"] == pytest.approx(
            20.0 + x1 / 150 * 1.5
        )
    assert rows[-1]["id"] == "bad" and rows[-1]["image"] == b"xx" and rows[-1]["tile_y"] is None
    assert rows[-1]["lat_min"] == 0.0 and rows[-1]["lat_max"] == 1.0


def test_stages_on_ray_actor_pool(ray_session, real_images):
    import ray

    rng = np.random.default_rng(0)
    rows = []
    for k, clean in enumerate(real_images[:6]):
        img = paint_stripes(clean, rng)[0] if k % 2 == 0 else clean
        rows.append({"id": f"img{k}", "image": encode_array(img, "png", 95)})
    table = pa.Table.from_pylist(rows)
    # two blocks built on the driver: a repartition task would need a whole CPU the pools hold
    ds = ray.data.from_arrow([table.slice(0, 3), table.slice(3)])
    for cls, kwargs in (
        (GapFillStage, {**GAP_STAGE, "method": "linear"}),
        (CloudMaskStage, CLOUD),
        (TilingStage, {**TILES, "width": 128, "height": 128, "boundary": "drop"}),
    ):
        ds = ds.map_batches(
            cls,
            fn_constructor_kwargs=kwargs,
            batch_format="pyarrow",
            batch_size=2,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1),
            num_cpus=0.25,
        )
    out = pa.Table.from_pylist(ds.take_all()).sort_by("id")
    assert out.num_rows == 6 * 4
    frac = dict(zip(out.column("source_id").to_pylist(), out.column("gap_filled_fraction").to_pylist()))
    assert all((frac[f"img{k}"] > 0.02) == (k % 2 == 0) for k in range(6))
    for img in out.column("image").to_pylist():
        assert decode_rgb_array(img).shape == (128, 128, 3)
    assert out.column("cloud_fraction").null_count == 0
