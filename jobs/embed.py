"""strata embed: embed every input image into <run_dir>/embeddings/ (rejects in rejects.parquet)."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict
from pipeline.curate import preprocess_specs
from pipeline.embed import run_embed


@hydra.main(config_path="../conf", config_name="embed", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    run = open_run_dir(cfg)
    counts = run_embed(run, to_dict(cfg.input), to_dict(cfg.embed), preprocess=preprocess_specs(to_dict(cfg.preprocess).get("stages")), force=cfg.force)
    run.update_run_json(counts={"embed": counts})
    print(f"embeddings: {run.path('embeddings')}  ({counts['kept']} kept, {counts['rejected']} rejected -> {run.path('rejects.parquet')})")


if __name__ == "__main__":
    main()
