"""``strata label``: the swipe labeler over a run's images (serve), or its labels out (export)."""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from jobs._common import open_run_dir, to_dict
from pipeline.labeler.job import run_label_job


@hydra.main(config_path="../conf", config_name="label", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = open_run_dir(cfg)
    if cfg.force:
        run.clear("label_queue", "label_export")
    result = run_label_job(run, to_dict(cfg))
    logging.getLogger("strata").info("label %s: %s", cfg.action, result)


if __name__ == "__main__":
    main()
