"""strata evaluate-active: the active-labeling protocol: every class x random starters x loop
variants, labeled by an oracle column; reports positives retrieved and false positives per variant.

Reads run_dir/embeddings (embeds input.path first when missing). Writes
run_dir/evaluate_active/runs.parquet and summary.json.
"""

from __future__ import annotations

import json

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import EMBEDDINGS, EVALUATE_ACTIVE_RUNS


@strata_job(
    "evaluate_active", main_keys=("run_dir", "input.path", "label_column", "n_starters", "classes", "budget", "seed")
)
def main(cfg: DictConfig) -> None:
    from pipeline.active.evaluate import evaluate_run

    run = open_run_dir(cfg)
    if not run.has(EMBEDDINGS):
        init_ray(cfg)
    summary = evaluate_run(run, to_dict(cfg), force=cfg.force)
    print(json.dumps(summary, indent=2))
    print(f"runs: {run.path(EVALUATE_ACTIVE_RUNS)}")


if __name__ == "__main__":
    main()
