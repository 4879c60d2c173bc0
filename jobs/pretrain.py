"""strata pretrain: self-supervised pretraining (SimCLR / SimSiam) of a backbone on the input
images, on Ray Train (resumes from the last epoch checkpoint).

Reads input.path. Writes run_dir/pretrain/checkpoint (use with `strata embed embed=ssl
embed.checkpoint=...`), pretrain/ray/ (epoch checkpoints) and pretrain/metrics.json; with
ssl.store=<folder or URI>, registers the checkpoint there by resolution/product/method (then
`strata embed embed=ssl embed.store=...` picks the one trained nearest the input's resolution).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir

log = logging.getLogger("strata.pretrain")


@strata_job(
    "pretrain",
    main_keys=(
        "input.path",
        "run_dir",
        "ssl.method",
        "ssl.backbone.name",
        "train.epochs",
        "train.batch_size",
        "train.num_workers",
        "train.use_gpu",
        "ssl.store",
        "seed",
    ),
)
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    from pipeline.ssl.train import run_pretrain

    info = run_pretrain(
        open_run_dir(cfg),
        to_dict(cfg.input),
        to_dict(cfg.ssl),
        to_dict(cfg.train),
        seed=int(cfg.seed),
        force=bool(cfg.force),
    )
    log.info("pretrain: %s (epoch %d, loss %.4f)", info["checkpoint"], info["epochs"], info["loss"])


if __name__ == "__main__":
    main()
