"""WMTS tile-grid math for the GIBS tile matrix sets (EPSG:4326 and EPSG:3857).

Every grid maps lon/lat to *global pixel coordinates* ``(x, y)`` of one zoom level (origin at the
tile matrix set's top-left corner, ``y`` growing south); tiles are ``tile_size`` pixels square, so
tile ``(row, col)`` covers pixels ``[row*T, (row+1)*T) x [col*T, (col+1)*T)``.

GIBS EPSG:4326 ("geographic", 512 px tiles, top-left corner (-180, 90)): level ``z`` has pixel
size ``p_z = 0.5625 / 2**z`` degrees, so ``x = (lon + 180) / p_z``, ``y = (90 - lat) / p_z`` and the
matrix is ``ceil(360 / (512 p_z))`` columns by ``ceil(180 / (512 p_z))`` rows (level 0: 2 x 1,
level 2: 5 x 3, level 8: 320 x 160). The named sets ``2km``, ``1km``, ``500m``, ``250m``, ...
share that pyramid and differ in their deepest level (``250m`` stops at level 8, ~244 m/pixel).

GIBS EPSG:3857 (Web Mercator, "GoogleMapsCompatible_Level{N}", 256 px tiles): level ``z`` is
``2**z x 2**z`` tiles; ``x = (lon + 180) / 360 * W``, ``y = (1 - ln(tan(phi) + sec(phi)) / pi) / 2 * W``
with ``W = 256 * 2**z`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# deepest level of each GIBS EPSG:4326 tile matrix set
GEOGRAPHIC_TILE_MATRIX_SETS: dict[str, int] = {
    "2km": 5,
    "1km": 6,
    "500m": 7,
    "250m": 8,
    "125m": 9,
    "62.5m": 10,
    "31.25m": 11,
    "15.625m": 12,
}
MERCATOR_MAX_LAT = 85.0511287798066


@dataclass(frozen=True)
class BBox:
    """Latitude/longitude box in degrees (WGS84)."""

    lat_min: float
    lat_max: float
    lon_min: float
    lon_max: float

    def __post_init__(self) -> None:
        if not (-90 <= self.lat_min < self.lat_max <= 90):
            raise ValueError(f"need -90 <= lat_min < lat_max <= 90, got {self.lat_min}, {self.lat_max}")
        if not (-180 <= self.lon_min < self.lon_max <= 180):
            raise ValueError(f"need -180 <= lon_min < lon_max <= 180, got {self.lon_min}, {self.lon_max}")


class TileGrid:
    """A WMTS tile matrix set: global pixel <-> lon/lat per level, and the matrix size."""

    projection: str = ""
    tile_size: int = 256

    def __init__(self, tile_matrix_set: str):
        self.tile_matrix_set = tile_matrix_set
        self.max_level = self._max_level(tile_matrix_set)

    def _max_level(self, tile_matrix_set: str) -> int:
        raise NotImplementedError

    def matrix_shape(self, level: int) -> tuple[int, int]:
        """``(rows, cols)`` of the tile matrix at ``level``."""
        raise NotImplementedError

    def lonlat_to_pixel(self, lon, lat, level: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def pixel_to_lonlat(self, x, y, level: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def check_level(self, level: int | None) -> int:
        """``level`` (default: the deepest one of the set), validated."""
        level = self.max_level if level is None else int(level)
        if not 0 <= level <= self.max_level:
            raise ValueError(f"level {level} outside 0..{self.max_level} of tile matrix set {self.tile_matrix_set!r}")
        return level


class GeographicGrid(TileGrid):
    """GIBS EPSG:4326 tile matrix sets (512 px tiles, 0.5625 deg/pixel at level 0)."""

    projection = "epsg4326"
    tile_size = 512
    level0_pixel_deg = 0.5625

    def _max_level(self, tile_matrix_set: str) -> int:
        if tile_matrix_set not in GEOGRAPHIC_TILE_MATRIX_SETS:
            raise ValueError(
                f"unknown EPSG:4326 tile matrix set {tile_matrix_set!r}; choose one of {sorted(GEOGRAPHIC_TILE_MATRIX_SETS)}"
            )
        return GEOGRAPHIC_TILE_MATRIX_SETS[tile_matrix_set]

    def pixel_deg(self, level: int) -> float:
        return self.level0_pixel_deg / 2**level

    def matrix_shape(self, level: int) -> tuple[int, int]:
        span = self.tile_size * self.pixel_deg(level)
        return math.ceil(180 / span - 1e-9), math.ceil(360 / span - 1e-9)

    def lonlat_to_pixel(self, lon, lat, level: int):
        p = self.pixel_deg(level)
        return (np.asarray(lon, dtype=np.float64) + 180.0) / p, (90.0 - np.asarray(lat, dtype=np.float64)) / p

    def pixel_to_lonlat(self, x, y, level: int):
        p = self.pixel_deg(level)
        return np.asarray(x, dtype=np.float64) * p - 180.0, 90.0 - np.asarray(y, dtype=np.float64) * p


class MercatorGrid(TileGrid):
    """GIBS EPSG:3857 ``GoogleMapsCompatible_Level{N}`` sets (256 px tiles, 2**z x 2**z matrix)."""

    projection = "epsg3857"
    tile_size = 256

    def _max_level(self, tile_matrix_set: str) -> int:
        prefix = "GoogleMapsCompatible_Level"
        if not tile_matrix_set.startswith(prefix) or not tile_matrix_set[len(prefix) :].isdigit():
            raise ValueError(f"EPSG:3857 tile matrix sets are named {prefix}<N>, got {tile_matrix_set!r}")
        return int(tile_matrix_set[len(prefix) :])

    def matrix_shape(self, level: int) -> tuple[int, int]:
        return 2**level, 2**level

    def lonlat_to_pixel(self, lon, lat, level: int):
        world = self.tile_size * 2**level
        phi = np.radians(np.clip(np.asarray(lat, dtype=np.float64), -MERCATOR_MAX_LAT, MERCATOR_MAX_LAT))
        x = (np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * world
        y = (1.0 - np.log(np.tan(phi) + 1.0 / np.cos(phi)) / np.pi) / 2.0 * world
        return x, y

    def pixel_to_lonlat(self, x, y, level: int):
        world = self.tile_size * 2**level
        lon = np.asarray(x, dtype=np.float64) / world * 360.0 - 180.0
        lat = np.degrees(np.arctan(np.sinh(np.pi * (1.0 - 2.0 * np.asarray(y, dtype=np.float64) / world))))
        return lon, lat


def make_grid(projection: str, tile_matrix_set: str) -> TileGrid:
    """The tile grid of a GIBS projection (``epsg4326`` / ``epsg3857``) and tile matrix set name."""
    grids = {"epsg4326": GeographicGrid, "epsg3857": MercatorGrid}
    if projection not in grids:
        raise ValueError(f"unsupported projection {projection!r}; choose one of {sorted(grids)}")
    return grids[projection](tile_matrix_set)


@dataclass(frozen=True)
class PixelWindow:
    """Half-open global pixel window ``[y0, y1) x [x0, x1)`` of one level."""

    level: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def pixel_window(grid: TileGrid, bbox: BBox, level: int) -> PixelWindow:
    """Smallest whole-pixel window containing ``bbox`` (clipped to the world extent)."""
    lat_max = min(bbox.lat_max, MERCATOR_MAX_LAT) if grid.projection == "epsg3857" else bbox.lat_max
    lat_min = max(bbox.lat_min, -MERCATOR_MAX_LAT) if grid.projection == "epsg3857" else bbox.lat_min
    xa, ya = grid.lonlat_to_pixel(bbox.lon_min, lat_max, level)
    xb, yb = grid.lonlat_to_pixel(bbox.lon_max, lat_min, level)
    eps = 1e-6  # bbox edges exactly on pixel edges must not pull in a neighbouring pixel
    x0, y0 = int(math.floor(float(xa) + eps)), int(math.floor(float(ya) + eps))
    x1, y1 = int(math.ceil(float(xb) - eps)), int(math.ceil(float(yb) - eps))
    rows, cols = grid.matrix_shape(level)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(max(x1, x0 + 1), cols * grid.tile_size), min(max(y1, y0 + 1), rows * grid.tile_size)
    return PixelWindow(level, y0, y1, x0, x1)


def tile_range(grid: TileGrid, window: PixelWindow) -> tuple[range, range]:
    """``(rows, cols)`` ranges of the tiles intersecting a pixel window."""
    t = grid.tile_size
    return range(window.y0 // t, (window.y1 - 1) // t + 1), range(window.x0 // t, (window.x1 - 1) // t + 1)


def window_bounds(grid: TileGrid, level: int, y0, x0, y1, x1) -> dict[str, np.ndarray]:
    """Lat/lon bounds of global pixel windows (arrays broadcast): ``lat_min, lat_max, lon_min, lon_max``."""
    lon_min, lat_max = grid.pixel_to_lonlat(x0, y0, level)
    lon_max, lat_min = grid.pixel_to_lonlat(x1, y1, level)
    return {"lat_min": lat_min, "lat_max": lat_max, "lon_min": lon_min, "lon_max": lon_max}


def tile_bounds(grid: TileGrid, level: int, row: int, col: int) -> dict[str, float]:
    """Lat/lon bounds of tile ``(row, col)``."""
    t = grid.tile_size
    b = window_bounds(grid, level, row * t, col * t, (row + 1) * t, (col + 1) * t)
    return {k: float(v) for k, v in b.items()}
