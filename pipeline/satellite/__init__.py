"""Satellite sources and preprocessing: GIBS WMTS downloader and layer discovery, tile grids,
tiling, cloud-free composites, swath-gap fill and animations (see ``docs`` in each module)."""

from pipeline.satellite.animate import animate_locations
from pipeline.satellite.capabilities import Capabilities, load_capabilities, parse_capabilities
from pipeline.satellite.catalogue import CATALOGUE, Layer, date_range, get_layer
from pipeline.satellite.composite import cloud_mask, composite, composite_table
from pipeline.satellite.download import Preprocess, TileSpec, composite_shards, download_scenes, read_shards
from pipeline.satellite.gapfill import fill_gaps, gap_fill, nodata_mask
from pipeline.satellite.gibs import DownloadReport, TileRequest, WMTSClient
from pipeline.satellite.grid import BBox, make_grid, pixel_window, tile_bounds, tile_range
from pipeline.satellite.stages import CloudMaskStage, GapFillStage, TilingStage
from pipeline.satellite.tiling import cut_tiles, tile_windows

__all__ = [
    "animate_locations",
    "Capabilities",
    "load_capabilities",
    "parse_capabilities",
    "CATALOGUE",
    "Layer",
    "date_range",
    "get_layer",
    "cloud_mask",
    "composite",
    "composite_table",
    "Preprocess",
    "TileSpec",
    "composite_shards",
    "download_scenes",
    "read_shards",
    "fill_gaps",
    "gap_fill",
    "nodata_mask",
    "DownloadReport",
    "TileRequest",
    "WMTSClient",
    "BBox",
    "make_grid",
    "pixel_window",
    "tile_bounds",
    "tile_range",
    "CloudMaskStage",
    "GapFillStage",
    "TilingStage",
    "cut_tiles",
    "tile_windows",
]
