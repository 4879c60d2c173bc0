"""strata cluster: hierarchical k-means with resampling of a run's embeddings (Ray actors, one shard each;
a small level 1 runs in this process: kmeans.in_process=auto).

Reads run_dir/embeddings (and dedup/duplicates.parquet when the run's dedup is current).
Writes run_dir/clusters/ (CSR arrays per level and resampling step, clusters.json).
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import EMBEDDINGS


@strata_job(
    "cluster",
    requires=[EMBEDDINGS],
    main_keys=(
        "run_dir",
        "kmeans.n_clusters",
        "kmeans.n_resampling_steps",
        "kmeans.metric",
        "kmeans.n_actors",
        "kmeans.use_gpu",
        "seed",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.kmeans.run import run_cluster

    init_ray(cfg, lazy=True)  # small inputs run in process: no Ray start-up
    run = open_run_dir(cfg)
    # run_cluster logs the capacity plan before level 1 and warns when it predicts more than an hour
    summary = run_cluster(run, to_dict(cfg.kmeans), force=bool(cfg.force), seed=int(cfg.seed))
    log.info("clusters: %s", summary)


if __name__ == "__main__":
    main()
