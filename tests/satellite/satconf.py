"""The ``conf/satellite/default.yaml`` values, passed to the library explicitly as the jobs pass them."""

from pipeline.config import load_group

SATELLITE = load_group("satellite/default")
TILES = SATELLITE["tiles"]  # TilingStage / TileSpec kwargs
GAP = {k: v for k, v in SATELLITE["gap_fill"].items() if k != "enabled"}  # gap_fill kwargs
MASK = {k: v for k, v in GAP.items() if k != "method"}  # nodata_mask kwargs
CLOUD = SATELLITE["cloud"]  # cloud_mask / CloudMaskStage kwargs
GAP_STAGE = {**GAP, "format": "same", "quality": TILES["quality"]}  # as conf/preprocess/satellite.yaml
