"""strata curate: embed every image, remove near-duplicates, cluster hierarchically, and pick a
balanced subset in which no concept dominates (Vo et al. 2024).

Reads input.path (a folder tree, Parquet or tar shards; default: the bundled UC Merced sample).
Writes to run_dir: embeddings/, rejects.parquet, dedup/, clusters/, manifest.parquet (the curated
subset), report.html, run.json. Rerunning resumes; a changed input or setting recomputes exactly
the steps that depend on it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import MANIFEST, REPORT, RUN_JSON


@strata_job(
    "curate",
    main_keys=(
        "input.path",
        "run_dir",
        "sample.target_size",
        "kmeans.n_clusters",
        "dedup.enabled",
        "dedup.near_duplicate",
        "dedup.semantic",
        "embed.backbone",
        "embed.device",
        "pretrain.enabled",
        "report.enabled",
        "seed",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.curate import run_curate

    init_ray(cfg, lazy=True)  # small inputs run in process: no Ray start-up
    run = open_run_dir(cfg)
    counts = run_curate(run, to_dict(cfg), force=cfg.force)
    print(f"manifest: {run.path(MANIFEST)}  ({counts['sample'].get('n_rows', '?')} rows)")
    if run.exists(REPORT):
        print(f"report:   {run.path(REPORT)}")
    print(f"run info: {run.path(RUN_JSON)}")


if __name__ == "__main__":
    main()
