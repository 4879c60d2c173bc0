"""``strata dedup``: exact + semantic near-duplicates of a run's embeddings into ``<run_dir>/dedup/``."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, log, open_run_dir, to_dict
from pipeline.dedup import run_dedup


@hydra.main(config_path="../conf", config_name="dedup", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    run = open_run_dir(cfg)
    log.info("dedup: %s", run_dedup(run, to_dict(cfg.dedup), force=bool(cfg.force)))


if __name__ == "__main__":
    main()
