"""strata download: NASA GIBS WMTS tiles over a bounding box and date range -> stitched per-date
scenes (swath gaps filled, clouds scored) -> training-tile Parquet shards (+ cloud-free composites).

Reads the GIBS WMTS service (download.base_url) and its capabilities (cached). Writes output=
(Parquet shards; `strata curate input.path=<output>` reads them), the tile cache, animations
(animate=gif|mp4) and run_dir/run.json; reruns skip finished dates. action=list prints the layers
matching download.search (title, dates, resolution, format, tile matrix set) and writes nothing.
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, strata_job
from jobs._config import to_dict
from jobs._record import open_run_dir


@strata_job(
    "download",
    main_keys=(
        "action",
        "download.search",
        "run_dir",
        "download.layer",
        "download.dates",
        "download.bbox",
        "output",
        "satellite.tiles.width",
        "composite.enabled",
        "animate",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.satellite.download import list_layers, run_download

    if cfg.action == "list":
        print(list_layers(to_dict(cfg)))
        return
    if cfg.action != "download":
        raise ValueError(f"action={cfg.action}: choose download or list")
    run = open_run_dir(cfg)
    summary = run_download(to_dict(cfg), run, force=bool(cfg.force))
    src = summary["source_tiles"]
    log.info(
        "download: %d dates written, %d skipped; source tiles fetched=%d cached=%d failed=%d -> %s",
        len(summary["dates"]),
        len(summary["skipped_dates"]),
        src["fetched"],
        src["cached"],
        src["failed"],
        cfg.output,
    )
    if "animations" in summary:
        log.info("download: %d animations -> %s", summary["animations"]["count"], summary["animations"]["output"])
    if summary["failed_tiles"]:
        log.warning(
            "%d source tiles failed (rerun to retry): %s", len(summary["failed_tiles"]), summary["failed_tiles"][:5]
        )


if __name__ == "__main__":
    main()
