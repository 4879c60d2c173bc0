"""strata curate: embed -> dedup -> hierarchical k-means -> balanced sampling -> manifest (+ report)."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict
from pipeline.curate import run_curate


@hydra.main(config_path="../conf", config_name="curate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    init_ray(cfg)
    run = open_run_dir(cfg)
    result = run_curate(run, to_dict(cfg), force=cfg.force)
    sample = result["counts"].get("sample", {})
    print(f"manifest: {run.path('manifest.parquet')}  ({sample.get('n_rows', '?')} rows)")
    if run.exists("report.html"):
        print(f"report:   {run.path('report.html')}")
    print(f"run info: {run.path('run.json')}")


if __name__ == "__main__":
    main()
