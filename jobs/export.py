"""strata export: write a run's curated selection (or its coreset, active-learning labels or swipe
labels) as a dataset to train on: an ImageFolder tree, WebDataset tar shards or JSONL.

Reads run_dir/manifest.parquet (source=curated), coreset/manifest.parquet, active/labels.parquet or
labels/labels.parquet, and the images their uri column names. Writes output (a folder or fsspec
URI, renamed into place when complete) with the dataset and export.json (counts, failures).
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict


@strata_job(
    "export",
    main_keys=(
        "run_dir",
        "output",
        "format",
        "source",
        "export.class_column",
        "export.shard_size",
        "export.mode",
        "export.multiplicity",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.export.rows import ExportConfig
    from pipeline.export.run import run_export
    from pipeline.rundir import RunDir

    config = ExportConfig.from_job(str(cfg.format), str(cfg.source), to_dict(cfg.export))
    record = run_export(RunDir(str(cfg.run_dir)), cfg.output, config, force=bool(cfg.force))
    failed = len(record.get("failed") or [])
    print(
        f"export: {record['samples']} samples of {record['rows']} rows ({cfg.source}) as {cfg.format} -> {cfg.output}"
        + (f"  ({failed} could not be read: see export.json)" if failed else "")
    )


if __name__ == "__main__":
    main()
