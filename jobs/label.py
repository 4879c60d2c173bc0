"""strata label: the browser swipe labeler over a run's images (action=serve), filling its queue
only (action=prepare), or writing the labels out (action=export).

Reads run_dir/manifest.parquet (else embeddings/, or queue.source). Writes run_dir/labels/
(labels.sqlite while serving; labels.parquet, label_events.parquet, imagefolder/ on export).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._record import open_run_dir


@strata_job(
    "label", main_keys=("run_dir", "action", "port", "share", "labeler.labels", "queue.limit", "export.imagefolder")
)
def main(cfg: DictConfig) -> None:
    from pipeline.labeler.job import run_label_job

    result = run_label_job(open_run_dir(cfg), to_dict(cfg), force=bool(cfg.force))
    logging.getLogger("strata").info("label %s: %s", cfg.action, result)


if __name__ == "__main__":
    main()
