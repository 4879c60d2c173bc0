"""Cloud masks and cloud-free composites: reference math on tiny stacks, synthetic clouds on real images."""

import numpy as np
import pyarrow as pa
import pytest
from satconf import CLOUD
from synth import paint_clouds

from pipeline.satellite.codec import decode_rgb_array, encode_array
from pipeline.satellite.composite import cloud_mask, composite, composite_table
from pipeline.satellite.stages import CloudMaskStage


def test_cloud_mask_thresholds_by_hand():
    px = np.array(
        [
            [
                [250, 250, 248],  # white cloud
                [200, 190, 120],  # bright sand: W = (.078+.039+.118)/.667 = .35 > .15
                [100, 100, 100],  # grey, too dark
                [230, 215, 200],
            ]
        ],  # m = .84, W = (.059+0+.059)/.843 = .14 < .15 -> cloud
        dtype=np.uint8,
    )
    assert cloud_mask(px, **{**CLOUD, "dilate": 0}).tolist() == [[True, False, False, True]]


def test_composite_matches_reference():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, size=(5, 6, 7, 3), dtype=np.uint8)
    cloud = rng.random((5, 6, 7)) < 0.4
    nodata = rng.random((5, 6, 7)) < 0.1
    out, count = composite(stack, cloud, nodata, "median")
    dark, _ = composite(stack, cloud, nodata, "darkest")
    for y in range(6):
        for x in range(7):
            clear = ~cloud[:, y, x] & ~nodata[:, y, x]
            valid = ~nodata[:, y, x]
            assert count[y, x] == clear.sum()
            bright = np.where(valid, stack[:, y, x].mean(-1), np.inf)
            darkest = stack[np.argmin(bright), y, x]
            np.testing.assert_array_equal(dark[y, x], darkest)
            if clear.any():
                ref = np.rint(np.median(stack[clear, y, x].astype(float), axis=0))
                np.testing.assert_array_equal(out[y, x], ref)
            else:
                np.testing.assert_array_equal(out[y, x], darkest)


@pytest.mark.parametrize("method", ["median", "darkest"])
def test_composite_removes_synthetic_clouds(real_images, method):
    """5 dates, ~30 % soft-edged cloud each: composite MAE vs the clean image < 3 / 255 and < 10 % of the input's."""
    for k, clean in enumerate(real_images[:8]):
        rng = np.random.default_rng(k)
        stack = np.stack([paint_clouds(clean, rng)[0] for _ in range(5)])
        out, _ = composite(stack, cloud_mask(stack, **CLOUD), None, method)
        err = np.abs(out.astype(float) - clean).mean()
        input_err = np.abs(stack.astype(float) - clean).mean()
        assert err < 3.0 and err < 0.1 * input_err, (k, err, input_err)


def test_composite_table_groups_by_location(real_images):
    rng = np.random.default_rng(3)
    rows = []
    for loc, clean in (("L0", real_images[2]), ("L1", real_images[3])):
        for d in range(4):
            rows.append(
                {
                    "id": f"{loc}/{d}",
                    "location": loc,
                    "date": f"2020-01-0{d + 1}",
                    "product": "P",
                    "image": encode_array(paint_clouds(clean, rng)[0], "png", 95),
                    "lat_min": 1.0,
                }
            )
    out = composite_table(
        pa.Table.from_pylist(rows[::-1]), method="median", cloud=CLOUD, nodata=None, image_format="png", quality=95
    )
    assert out.column("id").to_pylist() == ["L0/composite", "L1/composite"]
    assert out.column("date").to_pylist() == ["2020-01-01/2020-01-04"] * 2
    assert out.column("n_dates").to_pylist() == [4, 4] and "product" in out.column_names
    for img, clean in zip(out.column("image").to_pylist(), (real_images[2], real_images[3])):
        assert np.abs(decode_rgb_array(img).astype(float) - clean).mean() < 3.0


def test_cloud_mask_stage(real_images):
    rng = np.random.default_rng(5)
    cloudy = paint_clouds(real_images[4], rng, coverage=0.7)[0]
    images = [encode_array(real_images[5], "png", 95), encode_array(cloudy, "png", 95), None]
    batch = pa.table({"id": ["clear", "cloudy", "unreadable"], "image": pa.array(images, pa.binary())})
    out = CloudMaskStage(**CLOUD)(batch)
    f = out.column("cloud_fraction").to_pylist()
    assert f[1] > 0.6 and f[0] < f[1] and f[2] is None
    assert out.column("image").equals(batch.column("image"))
