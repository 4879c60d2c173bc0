"""strata dedup: exact and near-duplicate removal over a run's embeddings.

Reads run_dir/embeddings. Writes run_dir/dedup/duplicates.parquet (id, kept_id, similarity, kind)
and dedup/kept.parquet; `strata cluster` then leaves the duplicates out.
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import log, strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import EMBEDDINGS


@strata_job(
    "dedup",
    requires=[EMBEDDINGS],
    main_keys=(
        "run_dir",
        "dedup.exact",
        "dedup.near_duplicate",
        "dedup.copies.threshold",
        "dedup.semantic",
        "dedup.eps",
        "dedup.keep",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.dedup.run import run_dedup

    init_ray(cfg, lazy=True)  # dedup runs in this process: Ray only if a step asks for it
    log.info("dedup: %s", run_dedup(open_run_dir(cfg), to_dict(cfg.dedup), force=bool(cfg.force)))


if __name__ == "__main__":
    main()
