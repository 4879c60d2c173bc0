"""strata coreset: a k-center (diverse) subset of a run's embeddings, as a manifest.

Reads run_dir/embeddings (and the run's current dedup and clusters when present).
Writes run_dir/coreset/manifest.parquet (or coreset.output).
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import EMBEDDINGS


@strata_job(
    "coreset",
    requires=[EMBEDDINGS],
    main_keys=(
        "run_dir",
        "coreset.method",
        "coreset.fraction",
        "coreset.size",
        "coreset.metric",
        "coreset.drop_duplicates",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.coreset.run import run_coreset

    init_ray(cfg)
    log.info("coreset: %s", run_coreset(open_run_dir(cfg), to_dict(cfg.coreset), force=bool(cfg.force)))


if __name__ == "__main__":
    main()
