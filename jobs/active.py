"""strata active: from one starter image to a labeled dataset: nearest neighbours of the starter,
then rounds of uncertainty (+ diversity) sampling labeled by a person in the browser
(labeler=human) or by a column of known labels (labeler=oracle).

Reads run_dir/embeddings (embeds input.path first when missing). Writes run_dir/active/
(labels.parquet, rounds.parquet, head.npz, summary.json, imagefolder/) and report.html.
"""

from __future__ import annotations

import json
import sys

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir, read_run_json
from pipeline.artifacts import ACTIVE_LABELS, ACTIVE_SUMMARY, EMBEDDINGS


@strata_job(
    "active",
    main_keys=(
        "run_dir",
        "input.path",
        "starter.id",
        "starter.image",
        "oracle.column",
        "oracle.positive",
        "labeler.kind",
        "budget",
        "strategy",
        "diversity",
        "embed.features",
        "seed",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.active.run import run_active
    from pipeline.report import write_report

    # The embed config the run's embeddings were made with, read before this job records its own.
    recorded = read_run_json(str(cfg.run_dir)).get("config", {}).get("embed")
    run = open_run_dir(cfg)
    resolved = to_dict(cfg)
    embedded = run.has(EMBEDDINGS)
    if not embedded:
        init_ray(cfg)
    if embedded and recorded and recorded.get("features", "head") == "head":
        print(
            f"note: reusing {run.path(EMBEDDINGS)} (embed.features=head); on aerial scenes embed.features=stages "
            "retrieves more of the class (README, 'Embedding backbones'): use a fresh run_dir to re-embed",
            file=sys.stderr,
        )
    summary = run_active(run, resolved, force=cfg.force, embed_cfg=recorded or resolved["embed"])
    print(json.dumps({k: v for k, v in summary.items() if k != "imagefolder"}, indent=2))
    print(f"labels:  {run.path(ACTIVE_LABELS)}")
    print(f"summary: {run.path(ACTIVE_SUMMARY)}")
    if resolved["report"]["enabled"]:
        print(f"report:  {write_report(run, resolved)}")


if __name__ == "__main__":
    main()
