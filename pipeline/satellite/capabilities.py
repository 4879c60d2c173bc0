"""GIBS layer discovery: the WMTS 1.0.0 GetCapabilities document, fetched once and cached on disk.

``{base_url}/1.0.0/WMTSCapabilities.xml`` lists every layer of an endpoint; per layer we keep
``ows:Identifier``, ``ows:Title``, the ``Time`` dimension (``Value`` ranges ``start/end/period``,
e.g. ``2000-02-24/2024-01-10/P1D``; none for static layers), the linked tile matrix sets, the
formats and the tile ``ResourceURL`` template. A tile matrix set's resolution is that of its
deepest ``TileMatrix``: ``ScaleDenominator * 0.28 mm`` (the OGC standard pixel), in metres at the
equator for EPSG:4326 (1 degree = 111 319.49 m).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass

import httpx

from pipeline.atomic import atomic_path
from pipeline.satellite.catalogue import CATALOGUE, Layer

try:  # hardened parser when installed; the stdlib's expat already refuses external entities
    from defusedxml.ElementTree import fromstring as parse_xml
except ImportError:  # pragma: no cover - depends on the environment
    from xml.etree.ElementTree import fromstring as parse_xml

log = logging.getLogger(__name__)

CAPABILITIES_PATH = "1.0.0/WMTSCapabilities.xml"
NS = {"wmts": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
OGC_PIXEL_M = 0.00028
METRES_PER_DEGREE = 111319.49079327357
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}
_PLACEHOLDERS = {
    "{Time}": "{date}",
    "{TileMatrixSet}": "{tile_matrix_set}",
    "{TileMatrix}": "{level}",
    "{TileRow}": "{row}",
    "{TileCol}": "{col}",
}


@dataclass(frozen=True)
class TimeRange:
    """One ``Value`` of a Time dimension: ``start/end/period`` (ISO 8601)."""

    start: str
    end: str
    period: str

    @classmethod
    def parse(cls, value: str) -> TimeRange:
        parts = value.strip().split("/")
        if len(parts) == 1:  # a single instant
            return cls(parts[0], parts[0], "")
        if len(parts) != 3:
            raise ValueError(f"time value {value!r} is not start/end/period")
        return cls(*parts)


@dataclass(frozen=True)
class CapabilityLayer:
    """One layer of a capabilities document."""

    identifier: str
    title: str
    formats: tuple[str, ...]
    tile_matrix_sets: tuple[str, ...]
    times: tuple[TimeRange, ...]
    default_time: str | None
    templates: tuple[tuple[str, str], ...]  # (format, ResourceURL template)

    @property
    def start(self) -> str | None:
        return min(t.start for t in self.times) if self.times else None

    @property
    def end(self) -> str | None:
        return max(t.end for t in self.times) if self.times else None

    @property
    def periods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.period for t in self.times if t.period))

    @property
    def raster_format(self) -> str | None:
        """The first JPEG/PNG format (the downloader's), or None for vector-only layers."""
        return next((f for f in self.formats if f in EXTENSIONS), None)

    def covers(self, date: str) -> bool:
        """Whether ``date`` (``YYYY-MM-DD``) falls inside one of the time ranges (static layers: always)."""
        return not self.times or any(t.start[:10] <= date <= t.end[:10] for t in self.times)


@dataclass(frozen=True)
class Capabilities:
    """Layers by identifier and tile matrix sets' resolutions (metres per pixel at the deepest level)."""

    layers: dict[str, CapabilityLayer]
    resolutions_m: dict[str, float]
    projection: str = "epsg4326"

    def search(self, words: str | None = None) -> list[CapabilityLayer]:
        """Layers whose identifier or title contains every word of ``words`` (case-insensitive)."""
        terms = (words or "").lower().split()
        return [
            layer
            for layer in sorted(self.layers.values(), key=lambda la: la.identifier)
            if all(t in f"{layer.identifier} {layer.title}".lower() for t in terms)
        ]

    def to_layer(self, identifier: str) -> Layer:
        """The downloader's :class:`Layer` for ``identifier`` (first raster format, first tile matrix set)."""
        if identifier not in self.layers:
            close = difflib.get_close_matches(identifier, list(self.layers), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise KeyError(f"layer {identifier!r} is not in the GIBS capabilities{hint}")
        cap = self.layers[identifier]
        fmt = cap.raster_format
        if fmt is None:
            raise ValueError(f"layer {identifier!r} has no JPEG/PNG tiles (formats: {', '.join(cap.formats)})")
        template = dict(cap.templates).get(fmt)
        return Layer(
            name=identifier,
            tile_matrix_set=cap.tile_matrix_sets[0],
            projection=self.projection,
            format=EXTENSIONS[fmt],
            start_date=cap.start[:10] if cap.start else None,
            end_date=cap.end[:10] if cap.end else None,
            description=cap.title,
            url_suffix=url_suffix(template, identifier) if template else None,
        )


def url_suffix(template: str, identifier: str) -> str:
    """A ResourceURL template turned into the client's path after ``{base_url}/{layer}/``, e.g.
    ``default/{date}/{tile_matrix_set}/{level}/{row}/{col}.jpg`` (the host is the configured base_url)."""
    head, sep, tail = template.partition(f"/{identifier}/")
    if not sep:
        raise ValueError(f"ResourceURL template {template!r} does not contain /{identifier}/")
    for ogc, ours in _PLACEHOLDERS.items():
        tail = tail.replace(ogc, ours)
    return re.sub(r"\.(jpg|jpeg|png)$", ".{ext}", tail)


def _text(node, path: str) -> str | None:
    found = node.find(path, NS)
    return found.text.strip() if found is not None and found.text else None


def parse_capabilities(xml: bytes | str, projection: str) -> Capabilities:
    """Parse a WMTS 1.0.0 GetCapabilities document."""
    try:
        root = parse_xml(xml)
    except Exception as exc:
        raise ValueError(f"not a WMTS capabilities document: {exc}") from exc
    contents = root.find("wmts:Contents", NS)
    if contents is None:
        raise ValueError(f"not a WMTS capabilities document (root {root.tag!r} has no wmts:Contents)")
    resolutions: dict[str, float] = {}
    for tms in contents.findall("wmts:TileMatrixSet", NS):
        scales = [float(s.text) for s in tms.findall("wmts:TileMatrix/wmts:ScaleDenominator", NS) if s.text]
        if scales:
            resolutions[_text(tms, "ows:Identifier") or ""] = min(scales) * OGC_PIXEL_M
    layers: dict[str, CapabilityLayer] = {}
    for node in contents.findall("wmts:Layer", NS):
        identifier = _text(node, "ows:Identifier")
        if not identifier:
            continue
        times: list[TimeRange] = []
        default = None
        for dim in node.findall("wmts:Dimension", NS):
            if (_text(dim, "ows:Identifier") or "").lower() == "time":
                default = _text(dim, "wmts:Default")
                times = [TimeRange.parse(v.text) for v in dim.findall("wmts:Value", NS) if v.text]
        layers[identifier] = CapabilityLayer(
            identifier=identifier,
            title=_text(node, "ows:Title") or "",
            formats=tuple(f.text.strip() for f in node.findall("wmts:Format", NS) if f.text),
            tile_matrix_sets=tuple(
                t.text.strip() for t in node.findall("wmts:TileMatrixSetLink/wmts:TileMatrixSet", NS) if t.text
            ),
            times=tuple(times),
            default_time=default,
            templates=tuple(
                (r.get("format", ""), r.get("template", ""))
                for r in node.findall("wmts:ResourceURL", NS)
                if r.get("resourceType", "tile") == "tile"
            ),
        )
    return Capabilities(layers, resolutions, projection)


def capabilities_url(base_url: str, projection: str) -> str:
    return f"{base_url.format(projection=projection).rstrip('/')}/{CAPABILITIES_PATH}"


def load_capabilities(
    url: str, cache_dir: str, *, max_age_hours: float, timeout_s: float, projection: str
) -> Capabilities:
    """The capabilities at ``url``, from ``cache_dir`` when fetched less than ``max_age_hours`` ago.

    A failed fetch falls back to a stale cached copy (with a warning); with none, it raises.
    """
    path = os.path.join(os.path.expanduser(cache_dir), hashlib.sha1(url.encode()).hexdigest()[:16] + ".xml")
    age_h = (time.time() - os.path.getmtime(path)) / 3600 if os.path.exists(path) else None
    if age_h is not None and age_h < max_age_hours:
        with open(path, "rb") as fh:
            return parse_capabilities(fh.read(), projection)
    try:
        resp = httpx.get(url, timeout=timeout_s, follow_redirects=True, headers={"User-Agent": "strata-gibs/0.1"})
        resp.raise_for_status()
        caps = parse_capabilities(resp.content, projection)
    except (httpx.HTTPError, ValueError) as exc:
        if age_h is None:
            raise RuntimeError(f"cannot read GIBS capabilities from {url}: {exc}") from exc
        log.warning("capabilities fetch failed (%s); using the copy cached %.0f h ago", exc, age_h)
        with open(path, "rb") as fh:
            return parse_capabilities(fh.read(), projection)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(resp.content)
    return caps


def catalogue_capabilities() -> Capabilities:
    """The built-in catalogue as :class:`Capabilities` (the offline fallback for listing)."""
    layers = {
        la.name: CapabilityLayer(
            identifier=la.name,
            title=la.description,
            formats=("image/jpeg" if la.format in ("jpg", "jpeg") else "image/png",),
            tile_matrix_sets=(la.tile_matrix_set,),
            times=(TimeRange(la.start_date, dt.date.today().isoformat(), "P1D"),) if la.start_date else (),
            default_time=None,
            templates=(),
        )
        for la in CATALOGUE.values()
    }
    return Capabilities(layers, {})


def format_listing(caps: Capabilities, layers: list[CapabilityLayer]) -> str:
    """A plain-text table: identifier, title, dates, resolution, format, tile matrix set."""
    rows = [("layer", "title", "dates", "resolution", "format", "tile matrix set")]
    for la in layers:
        dates = f"{la.start[:10]}..{la.end[:10]} {','.join(la.periods)}".strip() if la.times else "static"
        res = ", ".join(f"{caps.resolutions_m[t]:.0f} m" if t in caps.resolutions_m else t for t in la.tile_matrix_sets)
        fmts = ", ".join(f.removeprefix("image/") for f in la.formats)
        rows.append((la.identifier, la.title, dates, res, fmts, ", ".join(la.tile_matrix_sets)))
    widths = [min(max(len(r[i]) for r in rows), 70) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c[:70].ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
