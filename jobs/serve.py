"""strata serve: the search server and page (FastAPI): query a run's index by image upload, id or
vector over HTTP (POST /search, GET /images/{id}, /healthz, page at /).

Reads run_dir/index (build it with `strata index`). Writes nothing. Loopback only unless host= is
set; any other address requires a token. Limits per request: conf/serve.yaml `limits`.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from pipeline.artifacts import INDEX

log = logging.getLogger("strata.serve")


@strata_job("serve", requires=[INDEX], main_keys=("run_dir", "host", "port", "token", "max_k", "max_upload_mb"))
def main(cfg: DictConfig) -> None:
    import faiss
    import uvicorn

    from pipeline.search.app import ServeSettings, create_app
    from pipeline.search.service import SearchService
    from pipeline.security import access_token

    if cfg.faiss_threads:
        faiss.omp_set_num_threads(int(cfg.faiss_threads))
    service = SearchService.from_run(
        str(cfg.run_dir),
        nprobe=cfg.nprobe,
        ef_search=cfg.ef_search,
        use_gpu=cfg.use_gpu,
        embed_overrides=to_dict(cfg.query_embed),
        thumbnail_side=int(cfg.thumbnail_side),
        max_k=int(cfg.max_k),
    )
    service.warmup()
    token, generated = access_token(str(cfg.host), cfg.token)
    settings = ServeSettings.from_config({**to_dict(cfg), "token": token})
    app = create_app(service, settings)
    log.info("serving %d vectors on http://%s:%d (docs at /docs)", service.index.n, cfg.host, int(cfg.port))
    if generated:  # shown once, on the terminal only (never logged or written to the run)
        print(
            f"access token (send as 'Authorization: Bearer <token>', or open http://<this host>:{int(cfg.port)}/?token={token}):\n{token}",
            flush=True,
        )
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level=str(cfg.log_level))


if __name__ == "__main__":
    main()
