"""``strata pretrain``: self-supervised pretraining (SimCLR / SimSiam) of a backbone on Ray Train."""
from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict

log = logging.getLogger("strata.pretrain")

STEP = "pretrain"


@hydra.main(config_path="../conf", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = open_run_dir(cfg)
    config = {"ssl": to_dict(cfg.ssl), "train": to_dict(cfg.train), "seed": int(cfg.seed), "run_dir": run.root}
    fingerprinted = {**config, "input": to_dict(cfg.input)}
    if cfg.force:
        run.clear(STEP)
    if run.is_done(STEP, fingerprinted):
        log.info("pretrain already finished: %s", run.marker(STEP).get("checkpoint"))
        return
    init_ray(cfg)
    from pipeline.io.sources import read_images
    from pipeline.ssl import pretrain

    result = pretrain(config, read_images(to_dict(cfg.input)), export_dir=run.local("pretrain", "checkpoint"))
    last = result.history[-1]
    run.update_run_json(pretrain={"checkpoint": result.checkpoint, "epochs": last["epoch"], "loss": last["loss"]})
    run.mark_done(STEP, fingerprinted, checkpoint=result.checkpoint, epochs=last["epoch"], loss=last["loss"])
    log.info("pretrain done: %s (epoch %d, loss %.4f)", result.checkpoint, last["epoch"], last["loss"])


if __name__ == "__main__":
    main()
