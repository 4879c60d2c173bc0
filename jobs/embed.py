"""strata embed: read every input image, preprocess it, and embed it with a pretrained backbone on Ray Data
(inputs of at most embed.local_max_images images: in this process, without starting Ray).

Reads input.path (folder tree, Parquet or tar shards; default: the bundled sample).
Writes run_dir/embeddings/ (id, embedding, uri, carried columns) and rejects.parquet (id, uri, reason).
"""

from __future__ import annotations

from omegaconf import DictConfig

from jobs._common import strata_job
from jobs._config import to_dict
from jobs._ray import init_ray
from jobs._record import open_run_dir
from pipeline.artifacts import EMBEDDINGS, REJECTS


@strata_job(
    "embed",
    main_keys=(
        "input.path",
        "input.format",
        "run_dir",
        "embed.backbone",
        "embed.features",
        "embed.tta",
        "embed.device",
        "embed.engine",
        "embed.pool_size",
        "force",
    ),
)
def main(cfg: DictConfig) -> None:
    from pipeline.embed.stage import run_embed
    from pipeline.stage import preprocess_specs

    init_ray(cfg, lazy=True)  # small inputs run in process: no Ray start-up
    run = open_run_dir(cfg)
    counts = run_embed(
        run,
        to_dict(cfg.input),
        to_dict(cfg.embed),
        preprocess=preprocess_specs(to_dict(cfg.preprocess)["stages"]),
        force=cfg.force,
    )
    print(
        f"embeddings: {run.path(EMBEDDINGS)}  ({counts['kept']} kept, {counts['rejected']} rejected -> {run.path(REJECTS)})"
    )


if __name__ == "__main__":
    main()
