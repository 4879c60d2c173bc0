"""Tiling windows and patch cutting."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.satellite.tiling import axis_starts, cut_tiles, tile_windows


def test_axis_starts_by_hand():
    # n=10, size=4, overlap=1 -> stride 3
    assert axis_starts(10, 4, 1, "drop").tolist() == [0, 3, 6]
    assert axis_starts(11, 4, 1, "drop").tolist() == [0, 3, 6]
    assert axis_starts(11, 4, 1, "pad").tolist() == [0, 3, 6, 9]
    assert axis_starts(11, 4, 1, "shift").tolist() == [0, 3, 6, 7]
    assert axis_starts(3, 4, 0, "drop").tolist() == []
    assert axis_starts(3, 4, 0, "shift").tolist() == [0]  # shorter than a tile: pad fallback
    with pytest.raises(ValueError):
        axis_starts(10, 4, 4, "drop")
    with pytest.raises(ValueError):
        axis_starts(10, 4, 0, "wrap")


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), size=st.integers(1, 64), data=st.data())
def test_axis_starts_properties(n, size, data):
    overlap = data.draw(st.integers(0, size - 1))
    stride = size - overlap
    for policy in ("drop", "pad", "shift"):
        s = axis_starts(n, size, overlap, policy)
        assert np.all(np.diff(s) > 0)
        if policy == "drop":
            assert np.all(s + size <= n) and (len(s) == 0 or n - (s[-1] + size) < stride)
        else:
            covered = np.zeros(n, bool)
            for a in s:
                covered[a : a + size] = True
            assert covered.all()
            if policy == "shift" and n >= size:
                assert np.all(s + size <= n)
            if policy == "pad":  # no window lies only in the padding or duplicates its neighbour's coverage
                assert np.all(s[1:] + overlap < n)


def test_cut_tiles_matches_slicing_and_pad_fraction():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(37, 50, 3), dtype=np.uint8)
    windows = tile_windows(37, 50, 16, 16, overlap=4, boundary="pad")
    tiles, pad = cut_tiles(image, windows, pad_value=7)
    assert tiles.shape == (len(windows), 16, 16, 3)
    for (y0, x0, y1, x1), tile, p in zip(windows, tiles, pad):
        ref = np.full((16, 16, 3), 7, np.uint8)
        inside = image[y0:y1, x0:x1]
        ref[: inside.shape[0], : inside.shape[1]] = inside
        np.testing.assert_array_equal(tile, ref)
        assert p == pytest.approx(1 - inside.shape[0] * inside.shape[1] / 256)
    mask_tiles, _ = cut_tiles(np.ones((37, 50), bool), windows, False)
    assert mask_tiles.shape == (len(windows), 16, 16)
