"""The GIBS downloader: plan tiles for a bbox and date range, fetch, stitch per date, preprocess, cut
into training tiles, write Parquet image shards.

Output: ``<output>/part-<layer>-<date>-<k>.parquet``, one row per training tile with columns
``id`` (``<layer>/<tms>/z<level>/y<gy>_x<gx>/<date>``), ``location`` (the id without the date: the
same ground patch on every date), ``image`` (PNG/JPEG bytes), ``date``, ``product``,
``resolution`` (tile matrix set), ``level``, ``lat_min``, ``lat_max``, ``lon_min``, ``lon_max``,
``width``, ``height``, ``pixel_y``/``pixel_x`` (global pixel offset of the tile at ``level``) and
the preprocessing columns ``pad_fraction``, ``gap_filled_fraction``, ``cloud_fraction``.

Training tiles touching a source tile that could not be fetched are left out and counted; such a
date is not marked done, so a rerun retries only the missing source tiles (the rest are cached).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import load_group, schema
from pipeline.io.tables import write_parquet_atomic
from pipeline.progress import Progress
from pipeline.rundir import INPUT, RunDir, input_fingerprint
from pipeline.satellite.catalogue import Layer
from pipeline.satellite.codec import decode_rgb_array, encode_array
from pipeline.satellite.composite import cloud_mask
from pipeline.satellite.gapfill import fill_gaps, nodata_mask
from pipeline.satellite.gibs import URL_TEMPLATE, DownloadReport, TileRequest, WMTSClient
from pipeline.satellite.grid import BBox, PixelWindow, TileGrid, make_grid, pixel_window, tile_range, window_bounds
from pipeline.satellite.tiling import cut_tiles, tile_windows

log = logging.getLogger(__name__)


@schema("satellite/default", key="tiles")
class TileSpec:
    """Training tiles: size, overlap, boundary policy (drop/pad/shift), encoding (``conf/satellite/default.yaml`` ``tiles``)."""

    width: int
    height: int
    overlap: int
    boundary: str
    format: str
    quality: int
    pad_value: int


def _download_defaults(key: str) -> dict[str, Any]:
    values = load_group("satellite/default")[key]
    return {k: v for k, v in values.items() if k != "enabled"}


@dataclass
class Preprocess:
    """Scene preprocessing in the downloader: gap fill (``None`` disables) and cloud-mask thresholds
    (defaults: ``conf/satellite/default.yaml`` ``gap_fill`` and ``cloud``)."""

    gap_fill: dict[str, Any] | None = field(default_factory=lambda: _download_defaults("gap_fill"))
    cloud: dict[str, Any] = field(default_factory=lambda: _download_defaults("cloud"))


def scene_requests(layer: Layer, grid: TileGrid, window: PixelWindow, date: str) -> list[TileRequest]:
    rows, cols = tile_range(grid, window)
    return [
        TileRequest(layer.name, date, layer.tile_matrix_set, window.level, r, c, layer.format)
        for r in rows
        for c in cols
    ]


def stitch(
    grid: TileGrid, window: PixelWindow, requests: list[TileRequest], cache_dir: str
) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic the cached tiles of one date and crop to ``window``.

    Returns ``(rgb (h, w, 3) uint8, valid (h, w) bool)``; pixels of missing or unreadable tiles are
    0 and not valid.
    """
    t = grid.tile_size
    h, w = window.shape
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    valid = np.zeros((h, w), dtype=bool)
    for req in requests:
        path = os.path.join(cache_dir, req.relpath)
        if not os.path.exists(path):
            continue
        try:
            with open(path, "rb") as fh:
                tile = decode_rgb_array(fh.read())
        except Exception as exc:  # a cache file damaged after it was written: refetch next time
            log.warning("dropping unreadable cached tile %s: %s", path, exc)
            os.remove(path)
            continue
        gy0, gx0 = req.row * t, req.col * t
        y0, y1 = max(gy0, window.y0), min(gy0 + tile.shape[0], window.y1)
        x0, x1 = max(gx0, window.x0), min(gx0 + tile.shape[1], window.x1)
        if y0 >= y1 or x0 >= x1:
            continue
        rgb[y0 - window.y0 : y1 - window.y0, x0 - window.x0 : x1 - window.x0] = tile[
            y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0
        ]
        valid[y0 - window.y0 : y1 - window.y0, x0 - window.x0 : x1 - window.x0] = True
    return rgb, valid


def scene_to_table(
    rgb: np.ndarray,
    valid: np.ndarray,
    *,
    layer: Layer,
    grid: TileGrid,
    window: PixelWindow,
    date: str,
    tiles: TileSpec,
    pre: Preprocess,
) -> tuple[pa.Table, int]:
    """Preprocess one stitched scene and cut it into training tiles; returns ``(table, n_dropped_missing)``."""
    gap = np.zeros(valid.shape, dtype=bool)
    if pre.gap_fill is not None:
        gap_kw = {k: v for k, v in pre.gap_fill.items() if k != "method"}
        gap = nodata_mask(rgb, **gap_kw) & valid
        if gap.any() and not gap[valid].all():
            rgb = fill_gaps(rgb, gap | ~valid, pre.gap_fill["method"])
    clouds = cloud_mask(rgb, **pre.cloud) & valid

    h, w = valid.shape
    windows = tile_windows(h, w, tiles.height, tiles.width, tiles.overlap, tiles.boundary)
    patches, pad_fraction = cut_tiles(rgb, windows, tiles.pad_value)
    inside = cut_tiles(valid, windows, False)[0].reshape(len(windows), -1).sum(axis=1)
    expected = np.rint((1.0 - pad_fraction) * tiles.height * tiles.width).astype(np.int64)
    complete = inside == expected
    area = float(tiles.height * tiles.width)
    gap_fraction = cut_tiles(gap, windows, False)[0].reshape(len(windows), -1).sum(axis=1) / area
    cloud_fraction = cut_tiles(clouds, windows, False)[0].reshape(len(windows), -1).sum(axis=1) / area

    keep = np.flatnonzero(complete)
    gy = window.y0 + windows[keep, 0]
    gx = window.x0 + windows[keep, 1]
    bounds = window_bounds(grid, window.level, gy, gx, gy + tiles.height, gx + tiles.width)
    location = [f"{layer.name}/{layer.tile_matrix_set}/z{window.level}/y{y}_x{x}" for y, x in zip(gy, gx)]
    n = len(keep)
    table = pa.table(
        {
            "id": pa.array([f"{loc}/{date}" for loc in location], pa.string()),
            "location": pa.array(location, pa.string()),
            "image": pa.array([encode_array(patches[i], tiles.format, tiles.quality) for i in keep], pa.binary()),
            "date": pa.array([date] * n, pa.string()),
            "product": pa.array([layer.name] * n, pa.string()),
            "resolution": pa.array([layer.tile_matrix_set] * n, pa.string()),
            "level": pa.array(np.full(n, window.level, dtype=np.int32)),
            **{k: pa.array(np.asarray(v, dtype=np.float64)) for k, v in bounds.items()},
            "width": pa.array(np.full(n, tiles.width, dtype=np.int32)),
            "height": pa.array(np.full(n, tiles.height, dtype=np.int32)),
            "pixel_y": pa.array(gy.astype(np.int64)),
            "pixel_x": pa.array(gx.astype(np.int64)),
            "pad_fraction": pa.array(pad_fraction[keep].astype(np.float32)),
            "gap_filled_fraction": pa.array(gap_fraction[keep].astype(np.float32)),
            "cloud_fraction": pa.array(cloud_fraction[keep].astype(np.float32)),
        }
    )
    return table, int(len(windows) - n)


def _write_date_shards(table: pa.Table, output: str, layer: str, date: str, shard_rows: int) -> list[str]:
    prefix = os.path.join(output, f"part-{layer}-{date}-")
    for old in glob.glob(prefix + "*.parquet"):
        os.remove(old)
    paths = []
    for k, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        path = f"{prefix}{k:05d}.parquet"
        write_parquet_atomic(table.slice(start, shard_rows), path)
        paths.append(path)
    return paths


def fetch_tiles(
    client: WMTSClient, requests: list[TileRequest], cache_dir: str, *, run: RunDir | None = None
) -> DownloadReport:
    """:meth:`WMTSClient.download` of ``requests`` a chunk at a time, reporting the tiles done (fetched,
    cached or failed) of the total to a :class:`Progress` (``download``, in ``tiles``; appended to
    ``run``'s ``progress.log``)."""
    todo = list(dict.fromkeys(requests))  # de-duplicated, order kept
    chunk = max(64, 8 * client.concurrency)
    report = DownloadReport()
    with Progress("download", len(todo), run=run, unit="tiles", log_interval=10.0) as bar:
        for start in range(0, len(todo), chunk):
            part = client.download(todo[start : start + chunk], cache_dir)
            report.fetched += part.fetched
            report.cached += part.cached
            report.failed += part.failed
            report.attempts += part.attempts
            bar.update(len(part.fetched) + len(part.cached) + len(part.failed), fetched=len(report.fetched), cached=len(report.cached), failed=len(report.failed))  # fmt: skip
    return report


def download_scenes(
    client: WMTSClient,
    layer: Layer,
    dates: list[str],
    bbox: BBox,
    *,
    output: str,
    cache_dir: str,
    level: int | None = None,
    tiles: TileSpec | None = None,
    pre: Preprocess | None = None,
    run: RunDir | None = None,
    shard_rows: int,
    force: bool = False,
) -> dict[str, Any]:
    """Download ``layer`` over ``bbox`` for each date and write training-tile shards to ``output``.

    Resumable: dates whose marker exists in ``run`` (same settings) are skipped, and source tiles
    already in ``cache_dir`` are not fetched again. Returns a summary with per-date counts and the
    list of failed tile URLs.
    """
    tiles = tiles or TileSpec()
    pre = pre or Preprocess()
    grid = make_grid(layer.projection, layer.tile_matrix_set)
    level = grid.check_level(level)
    window = pixel_window(grid, bbox, level)
    settings = {
        "layer": asdict(layer),
        "bbox": asdict(bbox),
        "level": level,
        "tiles": asdict(tiles),
        "pre": asdict(pre),
        "base_url": client.base_url,
    }
    if layer.start_date and dates and min(dates) < layer.start_date:
        log.warning("dates before %s precede the coverage of %s", layer.start_date, layer.name)

    def step(date: str) -> str:
        return f"download-{layer.name}-{date}"

    pending = [d for d in dates if force or run is None or not run.is_done(step(d), settings)]
    requests = {d: scene_requests(layer, grid, window, d) for d in pending}
    report = fetch_tiles(client, [r for d in pending for r in requests[d]], cache_dir, run=run)
    failed_urls = [(client.url(req), reason) for req, reason in report.failed]
    per_date: dict[str, dict[str, Any]] = {}
    for date in pending:
        rgb, valid = stitch(grid, window, requests[date], cache_dir)
        if not valid.any():
            per_date[date] = {"tiles": 0, "dropped_missing": None, "complete": False}
            continue
        table, dropped = scene_to_table(
            rgb, valid, layer=layer, grid=grid, window=window, date=date, tiles=tiles, pre=pre
        )
        shards = _write_date_shards(table, output, layer.name, date, shard_rows)
        complete = bool(valid.all())
        per_date[date] = {
            "tiles": table.num_rows,
            "dropped_missing": dropped,
            "complete": complete,
            "shards": [os.path.basename(s) for s in shards],
        }
        if run is not None and complete:
            run.mark_done(step(date), settings, tiles=table.num_rows)
    summary = {
        "layer": layer.name,
        "level": level,
        "scene_pixels": list(window.shape),
        "source_tiles": {
            "fetched": len(report.fetched),
            "cached": len(report.cached),
            "failed": len(report.failed),
            "attempts": report.attempts,
        },
        "dates": per_date,
        "skipped_dates": [d for d in dates if d not in pending],
        "failed_tiles": failed_urls,
    }
    if run is not None:
        run.update_run_json(download=summary)
    return summary


def read_shards(path: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of the downloader's Parquet shards under ``path``."""
    files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)) if os.path.isdir(path) else [path]
    files = [f for f in files if not os.path.basename(f).startswith((".", "_"))]
    if not files:
        raise FileNotFoundError(f"no Parquet shards under {path!r}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")


def composite_shards(
    input_path: str,
    output: str,
    *,
    method: str,
    cloud: dict,
    nodata: dict | None,
    image_format: str,
    quality: int,
    shard_rows: int,
    run: RunDir | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Cloud-free composite per tile location over the downloader's shards at ``input_path``.

    Writes ``<output>/part-composite-<k>.parquet`` (see :func:`pipeline.satellite.composite.composite_table`);
    with ``run``, a step skipped when the settings and the input shards are unchanged.
    """
    from pipeline.satellite.composite import composite_table

    settings = {
        "input": input_path,
        "method": method,
        "cloud": cloud,
        "nodata": nodata,
        "format": image_format,
        "quality": quality,
    }

    def build() -> dict[str, Any]:
        table = composite_table(
            read_shards(input_path),
            method=method,
            cloud=cloud,
            nodata=nodata,
            image_format=image_format,
            quality=quality,
        )
        for old in glob.glob(os.path.join(output, "part-composite-*.parquet")):
            os.remove(old)
        for k, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
            write_parquet_atomic(
                table.slice(start, shard_rows), os.path.join(output, f"part-composite-{k:05d}.parquet")
            )
        return {
            "locations": table.num_rows,
            "mean_clear_fraction": float(np.mean(table.column("clear_fraction").to_numpy()))
            if table.num_rows
            else None,
        }

    if run is None:
        return build()
    with run.step("composite", settings, {INPUT: input_fingerprint(input_path)}, force=force) as step:
        if not step.skipped:
            step.result = build()
    return step.result


def resolve_layer(src: dict[str, Any]) -> Layer:
    """The layer ``download.layer`` names: from the GIBS capabilities when they can be read (cached,
    see ``download.capabilities``), else the built-in catalogue; ``layer_overrides`` applied."""
    from pipeline.satellite.catalogue import CATALOGUE, get_layer

    overrides = src.get("layer_overrides") or {}
    caps = None
    if src["capabilities"]["enabled"]:
        caps = try_capabilities(src, overrides.get("projection") or src["projection"])
    catalogue = CATALOGUE
    if caps is not None and src["layer"] in caps.layers:
        catalogue = {src["layer"]: caps.to_layer(src["layer"])}
    return get_layer(src["layer"], overrides, catalogue)


def try_capabilities(src: dict[str, Any], projection: str):
    """The endpoint's capabilities, or None (with a warning) when they cannot be read."""
    from pipeline.satellite.capabilities import capabilities_url, load_capabilities

    cap = src["capabilities"]
    try:
        return load_capabilities(
            capabilities_url(src["base_url"], projection),
            cap["cache_dir"],
            max_age_hours=float(cap["max_age_hours"]),
            timeout_s=float(src["timeout_s"]),
            projection=projection,
        )
    except RuntimeError as exc:
        log.warning("%s; falling back to the built-in catalogue", exc)
        return None


def list_layers(cfg: dict[str, Any]) -> str:
    """``strata download action=list``: the layers matching ``download.search`` as a text table."""
    from pipeline.satellite.capabilities import catalogue_capabilities, format_listing

    src = cfg["download"]
    caps = try_capabilities(src, src["projection"]) if src["capabilities"]["enabled"] else None
    source = "GIBS capabilities" if caps is not None else "built-in catalogue (capabilities unavailable)"
    caps = caps or catalogue_capabilities()
    found = caps.search(src.get("search"))
    return f"{len(found)} of {len(caps.layers)} layers ({source}):\n" + format_listing(caps, found)


def run_download(cfg: dict[str, Any], run: RunDir, force: bool = False) -> dict[str, Any]:
    """The ``strata download`` job from its resolved config dict (see ``conf/download.yaml``)."""
    from pipeline.satellite.animate import check_encoder
    from pipeline.satellite.catalogue import date_range

    src = cfg["download"]
    animate = cfg.get("animate")
    if animate:
        check_encoder(animate)
    layer = resolve_layer(src)
    client = WMTSClient(
        src["base_url"].format(projection=layer.projection),
        timeout_s=src["timeout_s"],
        retries=src["retries"],
        backoff_s=src["backoff_s"],
        backoff_max_s=src["backoff_max_s"],
        concurrency=src["concurrency"],
        tile_size=make_grid(layer.projection, layer.tile_matrix_set).tile_size,
        url_template="{base_url}/{layer}/" + layer.url_suffix if layer.url_suffix else URL_TEMPLATE,
        seed=int(cfg["seed"]),
    )
    dates = covered_dates(
        layer, date_range(src["dates"]["start"], src["dates"].get("end"), int(src["dates"]["step_days"]))
    )
    satellite = cfg["satellite"]
    gap = dict(satellite["gap_fill"])
    pre = Preprocess(
        gap_fill=({k: v for k, v in gap.items() if k != "enabled"} if gap.pop("enabled") else None),
        cloud=dict(satellite["cloud"]),
    )
    summary = download_scenes(
        client,
        layer,
        dates,
        BBox(**src["bbox"]),
        output=cfg["output"],
        cache_dir=src["cache_dir"],
        level=src.get("level"),
        tiles=TileSpec(**satellite["tiles"]),
        pre=pre,
        run=run,
        shard_rows=int(cfg["shard_rows"]),
        force=force,
    )
    comp = cfg.get("composite") or {}
    if comp.get("enabled"):
        nodata = None
        if pre.gap_fill is None:  # gaps still in the tiles: keep them out of the composite
            nodata = {k: v for k, v in gap.items() if k != "method"}
        summary["composite"] = composite_shards(
            cfg["output"],
            comp["output"],
            method=comp["method"],
            cloud=pre.cloud,
            nodata=nodata,
            image_format=satellite["tiles"]["format"],
            quality=int(satellite["tiles"]["quality"]),
            shard_rows=int(cfg["shard_rows"]),
            run=run,
            force=force,
        )
    if animate:
        from pipeline.satellite.animate import animate_locations

        anim = cfg["animation"]
        rows = read_shards(cfg["output"], columns=["location", "date", "image"])
        rows = rows.filter(pc.is_in(rows.column("date"), pa.array(dates)))
        paths = animate_locations(rows, anim["output"], animate, fps=float(anim["fps"]), label=bool(anim["label"]))
        summary["animations"] = {"format": animate, "count": len(paths), "output": anim["output"]}
        run.update_run_json(download=summary)
    return summary


def covered_dates(layer: Layer, dates: list[str]) -> list[str]:
    """``dates`` inside the layer's coverage (a warning names those left out); a static layer (no
    ``{date}`` in its tile URL) has one image, so only the first date is kept."""
    if layer.url_suffix is not None and "{date}" not in layer.url_suffix:
        log.warning("layer %s has no time dimension: downloading it once (date label %s)", layer.name, dates[0])
        return dates[:1]
    lo, hi = layer.start_date or "0000", layer.end_date or "9999"
    kept = [d for d in dates if lo <= d <= hi]
    if not kept:
        raise ValueError(
            f"no requested date lies in {layer.name}'s coverage {lo}..{hi} (dates {dates[0]}..{dates[-1]})"
        )
    if len(kept) < len(dates):
        log.warning("%d dates outside %s..%s of %s are skipped", len(dates) - len(kept), lo, hi, layer.name)
    return kept
