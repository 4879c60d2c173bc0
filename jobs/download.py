"""strata download: NASA GIBS WMTS tiles over a bounding box and date range -> stitched per-date
scenes (swath gaps filled, clouds scored) -> training-tile Parquet shards (+ cloud-free composites).

Reads the GIBS WMTS service (download.base_url). Writes output= (Parquet shards; `strata curate
input.path=<output>` reads them), the tile cache, and run_dir/run.json; reruns skip finished dates.
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, open_run_dir, strata_job, to_dict


@strata_job(
    "download",
    main_keys=(
        "run_dir",
        "download.layer",
        "download.dates",
        "download.bbox",
        "output",
        "tiles.width",
        "composite.enabled",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.satellite.download import run_download

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
    if summary["failed_tiles"]:
        log.warning(
            "%d source tiles failed (rerun to retry): %s", len(summary["failed_tiles"]), summary["failed_tiles"][:5]
        )


if __name__ == "__main__":
    main()
