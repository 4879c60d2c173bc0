"""The cluster step writes its per-step progress to ``<run_dir>/progress.log`` (followable with tail -f)."""

from __future__ import annotations

import re

from pipeline.kmeans.run import run_cluster
from pipeline.progress import read_log

CFG = {
    "n_clusters": [12, 4],
    "n_iters": [4, 4],
    "n_resampling_steps": [2, 1],
    "sample_size": [6, 3],
    "metric": "cosine",
    "in_process": True,
}


def test_cluster_step_writes_progress_log(blob_run):
    run, _, _ = blob_run
    run_cluster(run, CFG)
    lines = read_log(run)
    for level, steps in ((1, 3), (2, 2)):  # 1 + n_resampling_steps steps per level
        mine = [line for line in lines if re.match(rf"\d{{4}}-\d\d-\d\dT[\d:]{{8}}Z kmeans/level_{level} ", line)]
        assert len(mine) >= 2, lines  # at least one step line and the final one
        assert f"{steps}/{steps} step (100%)" in mine[-1] and "inertia=" in mine[-1] and "non_empty=" in mine[-1]
