"""A small built-in catalogue of GIBS layers (products), overridable from config.

Names, tile matrix sets and formats follow the GIBS "best" WMTS endpoints
(``https://gibs.earthdata.nasa.gov/wmts/<projection>/best``). Start dates are indicative and only
produce a warning when a requested date precedes them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GIBS_BASE_URL = "https://gibs.earthdata.nasa.gov/wmts/{projection}/best"


@dataclass(frozen=True)
class Layer:
    """One WMTS layer: identifier, projection, tile matrix set (native resolution), image format."""

    name: str
    tile_matrix_set: str = "250m"
    projection: str = "epsg4326"
    format: str = "jpg"
    start_date: str | None = None
    description: str = ""
    end_date: str | None = None
    url_suffix: str | None = None  # tile path after ``{base_url}/{layer}/`` (from the capabilities' ResourceURL)

    def __post_init__(self) -> None:
        if self.format not in ("jpg", "jpeg", "png"):
            raise ValueError(f"layer {self.name!r}: format must be jpg or png, got {self.format!r}")


CATALOGUE: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        Layer(
            "MODIS_Terra_CorrectedReflectance_TrueColor",
            "250m",
            start_date="2000-02-24",
            description="MODIS Terra corrected reflectance, true colour (bands 1-4-3), daily, 250 m",
        ),
        Layer(
            "MODIS_Aqua_CorrectedReflectance_TrueColor",
            "250m",
            start_date="2002-07-04",
            description="MODIS Aqua corrected reflectance, true colour (bands 1-4-3), daily, 250 m",
        ),
        Layer(
            "MODIS_Terra_CorrectedReflectance_Bands721",
            "250m",
            start_date="2000-02-24",
            description="MODIS Terra corrected reflectance, false colour (bands 7-2-1), daily, 250 m",
        ),
        Layer(
            "VIIRS_SNPP_CorrectedReflectance_TrueColor",
            "250m",
            start_date="2015-11-24",
            description="VIIRS Suomi NPP corrected reflectance, true colour (I1-M4-M3), daily, 250 m",
        ),
        Layer(
            "VIIRS_NOAA20_CorrectedReflectance_TrueColor",
            "250m",
            start_date="2018-01-01",
            description="VIIRS NOAA-20 corrected reflectance, true colour, daily, 250 m",
        ),
        Layer(
            "VIIRS_SNPP_DayNightBand_ENCC",
            "500m",
            format="png",
            start_date="2016-11-30",
            description="VIIRS Suomi NPP day/night band, enhanced near-constant contrast, 500 m",
        ),
    )
}


def get_layer(
    name: str, overrides: Mapping[str, Any] | None = None, catalogue: Mapping[str, Layer] | None = None
) -> Layer:
    """Entry ``name`` of ``catalogue`` (default: the built-in one) with ``overrides`` applied; names
    in neither need ``tile_matrix_set`` etc. in overrides."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    fields = {f.name for f in dataclasses.fields(Layer)}
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = set(extra) - fields
    if unknown:
        raise ValueError(f"unknown layer fields {sorted(unknown)}; allowed: {sorted(fields)}")
    if name in catalogue:
        return dataclasses.replace(catalogue[name], **{k: v for k, v in extra.items() if k != "name"})
    if "tile_matrix_set" not in extra:
        raise KeyError(
            f"layer {name!r} is not in the GIBS capabilities nor the built-in catalogue; "
            "`strata download action=list download.search=<words>` lists the layers, or give its "
            "tile_matrix_set (and format, projection) in download.layer_overrides"
        )
    return Layer(**{**extra, "name": name})


def date_range(start: str, end: str | None, step_days: int) -> list[str]:
    """ISO dates from ``start`` to ``end`` (``None``: ``start``) inclusive every ``step_days`` days."""
    first = dt.date.fromisoformat(str(start))
    last = dt.date.fromisoformat(str(end)) if end else first
    if last < first:
        raise ValueError(f"end date {last} precedes start date {first}")
    if step_days < 1:
        raise ValueError(f"step_days must be >= 1, got {step_days}")
    n = (last - first).days // step_days + 1
    return [(first + dt.timedelta(days=i * step_days)).isoformat() for i in range(n)]
