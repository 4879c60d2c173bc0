"""``strata coreset``: k-center coreset of a run's embeddings into ``<run_dir>/coreset/manifest.parquet``."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, log, open_run_dir, to_dict
from pipeline.coreset import run_coreset


@hydra.main(config_path="../conf", config_name="coreset", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    run = open_run_dir(cfg)
    log.info("coreset: %s", run_coreset(run, to_dict(cfg.coreset), force=bool(cfg.force)))


if __name__ == "__main__":
    main()
