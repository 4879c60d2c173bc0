"""``strata pretrain``: self-supervised pretraining (SimCLR / SimSiam) of a backbone on Ray Train."""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict

log = logging.getLogger("strata.pretrain")


@hydra.main(config_path="../conf", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    from pipeline.ssl import run_pretrain

    info = run_pretrain(open_run_dir(cfg), to_dict(cfg.input), to_dict(cfg.ssl), to_dict(cfg.train), seed=int(cfg.seed), force=bool(cfg.force))
    log.info("pretrain: %s (epoch %d, loss %.4f)", info["checkpoint"], info["epochs"], info["loss"])


if __name__ == "__main__":
    main()
