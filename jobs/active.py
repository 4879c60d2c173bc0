"""strata active: from one starter image to a labeled dataset (seed set, rounds, oracle or person)."""
from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from jobs._common import init_ray, open_run_dir, to_dict
from pipeline.active.run import run_active
from pipeline.report import write_report
from pipeline.rundir import RunDir


@hydra.main(config_path="../conf", config_name="active", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # The embed config the run's embeddings were made with, read before this job records its own.
    recorded = (RunDir(str(cfg.run_dir)).read_json("run.json", default={}) or {}).get("config", {}).get("embed")
    run = open_run_dir(cfg)
    resolved = to_dict(cfg)
    if not run.exists("embeddings"):
        init_ray(cfg)
    if run.exists("embeddings") and recorded and recorded.get("features", "head") == "head":
        print(f"note: reusing {run.path('embeddings')} (embed.features=head); on aerial scenes embed.features=stages "
              "retrieves more of the class (README, 'Embedding backbones'): use a fresh run_dir to re-embed", file=sys.stderr)
    summary = run_active(run, resolved, force=cfg.force, embed_cfg=recorded or resolved["embed"])
    print(json.dumps({k: v for k, v in summary.items() if k != "imagefolder"}, indent=2))
    print(f"labels:  {run.path('active', 'labels.parquet')}")
    print(f"summary: {run.path('active', 'summary.json')}")
    if (resolved.get("report") or {}).get("enabled", True):
        print(f"report:  {write_report(run, resolved)}")


if __name__ == "__main__":
    main()
