"""strata sample: hierarchical balanced sampling of a run's clusters into the curated manifest.

Reads run_dir/clusters (and embeddings/ for the carried columns).
Writes run_dir/manifest.parquet (id, uri, level_1..level_L, distance, multiplicity, carried columns).
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, strata_job
from jobs._config import to_dict
from jobs._record import open_run_dir
from pipeline.artifacts import CLUSTERS


@strata_job(
    "sample",
    requires=[CLUSTERS],
    main_keys=("run_dir", "sample.target_size", "sample.strategy", "sample.multiplier", "seed", "force"),
)
def main(cfg: DictConfig) -> None:
    from pipeline.sampling.run import run_sample

    log.info(
        "manifest: %s", run_sample(open_run_dir(cfg), to_dict(cfg.sample), force=bool(cfg.force), seed=int(cfg.seed))
    )


if __name__ == "__main__":
    main()
