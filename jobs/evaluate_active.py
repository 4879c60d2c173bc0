"""strata evaluate-active: the active-labeling protocol (all classes x random starters x variants)."""
from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict
from pipeline.active.evaluate import evaluate_run


@hydra.main(config_path="../conf", config_name="evaluate_active", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run = open_run_dir(cfg)
    if not run.exists("embeddings"):
        init_ray(cfg)
    summary = evaluate_run(run, to_dict(cfg), force=cfg.force)
    print(json.dumps(summary, indent=2))
    print(f"runs: {run.path('evaluate_active', 'runs.parquet')}")


if __name__ == "__main__":
    main()
