"""Tile-grid math against hand-computed GIBS grids."""

import numpy as np
import pytest

from pipeline.satellite.grid import BBox, make_grid, pixel_window, tile_bounds, tile_range


@pytest.mark.parametrize(
    "level, shape", [(0, (1, 2)), (1, (2, 3)), (2, (3, 5)), (3, (5, 10)), (6, (40, 80)), (8, (160, 320))]
)
def test_geographic_matrix_shapes(level, shape):
    assert make_grid("epsg4326", "250m").matrix_shape(level) == shape


def test_geographic_tile_bounds_by_hand():
    grid = make_grid("epsg4326", "250m")
    # level 8: 0.5625 / 256 deg per pixel, 512 px -> 1.125 deg per tile
    b = tile_bounds(grid, 8, 72, 160)
    assert b == pytest.approx({"lat_min": 7.875, "lat_max": 9.0, "lon_min": 0.0, "lon_max": 1.125})
    b0 = tile_bounds(grid, 0, 0, 1)  # level 0 tile spans 288 deg
    assert b0 == pytest.approx({"lat_min": -198.0, "lat_max": 90.0, "lon_min": 108.0, "lon_max": 396.0})


def test_pixel_window_and_tile_range_by_hand():
    grid = make_grid("epsg4326", "250m")
    p = 0.5625 / 256
    bbox = BBox(lat_min=8.8, lat_max=9.2, lon_min=-0.2, lon_max=0.2)
    win = pixel_window(grid, bbox, 8)
    # x = (lon + 180) / p, y = (90 - lat) / p; floor the start, ceil the end
    assert (win.x0, win.x1) == (int(np.floor(179.8 / p)), int(np.ceil(180.2 / p)))
    assert (win.y0, win.y1) == (int(np.floor(80.8 / p)), int(np.ceil(81.2 / p)))
    rows, cols = tile_range(grid, win)
    assert list(rows) == [71, 72] and list(cols) == [159, 160]
    # a bbox exactly on tile edges covers exactly one tile
    one = pixel_window(grid, BBox(7.875, 9.0, 0.0, 1.125), 8)
    assert (one.y0, one.y1, one.x0, one.x1) == (72 * 512, 73 * 512, 160 * 512, 161 * 512)
    assert [list(r) for r in tile_range(grid, one)] == [[72], [160]]


def test_tile_matrix_set_levels():
    assert make_grid("epsg4326", "2km").max_level == 5
    assert make_grid("epsg4326", "1km").check_level(None) == 6
    with pytest.raises(ValueError, match="outside"):
        make_grid("epsg4326", "500m").check_level(8)
    with pytest.raises(ValueError, match="unknown"):
        make_grid("epsg4326", "300m")
    with pytest.raises(ValueError, match="projection"):
        make_grid("epsg9999", "250m")


def test_mercator_grid_by_hand():
    grid = make_grid("epsg3857", "GoogleMapsCompatible_Level9")
    assert grid.max_level == 9 and grid.matrix_shape(3) == (8, 8)
    b = tile_bounds(grid, 1, 0, 0)  # north-west quarter of the world
    assert b["lon_min"] == pytest.approx(-180) and b["lon_max"] == pytest.approx(0)
    assert b["lat_min"] == pytest.approx(0, abs=1e-9) and b["lat_max"] == pytest.approx(85.0511287798, abs=1e-6)
    lon, lat = np.array([-120.5, 3.25, 170.0]), np.array([-60.0, 0.5, 70.0])
    x, y = grid.lonlat_to_pixel(lon, lat, 7)
    back = grid.pixel_to_lonlat(x, y, 7)
    np.testing.assert_allclose(back, (lon, lat), atol=1e-9)


def test_bbox_validation():
    with pytest.raises(ValueError):
        BBox(10, 5, 0, 1)
    with pytest.raises(ValueError):
        BBox(0, 1, -200, 1)
