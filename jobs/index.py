"""strata index: build the FAISS search index of a run's embeddings (exact up to search.flat_max
rows, IVF / IVF-PQ / HNSW above; optional partitions by carried columns).

Reads run_dir/embeddings (or embeddings=). Writes run_dir/index/. No Ray: the embeddings are
streamed shard by shard and added to FAISS in batches.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._record import open_run_dir
from pipeline.artifacts import INDEX

log = logging.getLogger("strata.index")


@strata_job(
    "index",
    main_keys=(
        "run_dir",
        "embeddings",
        "search.kind",
        "search.metric",
        "search.partition_by",
        "faiss_threads",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    import faiss

    from pipeline.search.build import build_run_index

    if cfg.faiss_threads:
        faiss.omp_set_num_threads(int(cfg.faiss_threads))
    run = open_run_dir(cfg)
    info = build_run_index(
        run, to_dict(cfg.search), force=bool(cfg.force), batch_rows=int(cfg.batch_rows), source=cfg.embeddings
    )
    log.info(
        "index at %s: %d vectors, %d partition(s), %s", run.path(INDEX), info["n"], info["partitions"], info["kinds"]
    )


if __name__ == "__main__":
    main()
