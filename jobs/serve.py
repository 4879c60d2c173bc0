"""``strata serve``: FastAPI search server (``POST /search``, ``GET /images/{id}``, ``/healthz``, page at ``/``)."""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from jobs._common import to_dict

log = logging.getLogger("strata.serve")


@hydra.main(config_path="../conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import faiss
    import uvicorn

    from pipeline.search import SearchService
    from pipeline.search.app import create_app

    if cfg.faiss_threads:
        faiss.omp_set_num_threads(int(cfg.faiss_threads))
    service = SearchService.from_run(
        str(cfg.run_dir), nprobe=cfg.nprobe, ef_search=cfg.ef_search, use_gpu=cfg.use_gpu,
        embed_overrides=to_dict(cfg.query_embed), thumbnail_side=int(cfg.thumbnail_side), max_k=int(cfg.max_k),
    )
    service.warmup()
    app = create_app(service, max_upload_bytes=int(cfg.max_upload_mb) * 2**20)
    log.info("serving %d vectors on http://%s:%d (docs at /docs)", service.index.n, cfg.host, int(cfg.port))
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level))


if __name__ == "__main__":
    main()
