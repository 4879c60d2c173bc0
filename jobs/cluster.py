"""``strata cluster``: hierarchical k-means with resampling of a run's embeddings."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, log, open_run_dir, to_dict
from pipeline.kmeans import run_cluster


@hydra.main(config_path="../conf", config_name="cluster", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    run = open_run_dir(cfg)
    summary = run_cluster(run, to_dict(cfg.kmeans), force=bool(cfg.force), seed=int(cfg.seed))
    run.update_run_json(cluster=summary)
    log.info("clusters: %s", summary)


if __name__ == "__main__":
    main()
