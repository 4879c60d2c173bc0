"""``strata sample``: hierarchical balanced sampling of a run's clusters into manifest.parquet."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import log, open_run_dir, to_dict
from pipeline.sampling import run_sample


@hydra.main(config_path="../conf", config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = open_run_dir(cfg)
    summary = run_sample(run, to_dict(cfg.sampling), force=bool(cfg.force))
    run.update_run_json(sample=summary)
    log.info("manifest: %s", summary)


if __name__ == "__main__":
    main()
