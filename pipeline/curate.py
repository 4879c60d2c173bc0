"""``strata curate``: the curation pipeline as a plain list of steps over one run directory.

    [pretrain] -> embed -> [dedup] -> cluster -> sample -> [report]

With ``input.format=embeddings`` the embed step imports vectors made elsewhere (any modality) and
the later steps run on them unchanged; dedup keeps to what needs no pixels.

Each step skips itself when it finished before with the same config and the same inputs (see
:meth:`pipeline.rundir.RunDir.step`), so rerunning a command resumes after the last finished step,
a changed input or setting recomputes exactly the steps that depend on it, and ``force``
recomputes everything.
"""

from __future__ import annotations

from typing import Any

from pipeline.artifacts import CLUSTERS, DUPLICATES, EMBEDDINGS, MANIFEST
from pipeline.dedup.run import run_dedup
from pipeline.embed.stage import run_embed
from pipeline.io.embeddings import is_embeddings_input
from pipeline.kmeans.run import run_cluster
from pipeline.report import write_report
from pipeline.rundir import RunDir
from pipeline.sampling.run import run_sample
from pipeline.stage import preprocess_specs


def run_curate(run: RunDir, cfg: dict, *, force: bool = False) -> dict[str, Any]:
    """Run every enabled step of ``cfg`` (the resolved ``conf/curate.yaml``) in ``run``; returns counts per step."""
    seed = int(cfg["seed"])
    counts: dict[str, Any] = {}
    embed_cfg = dict(cfg["embed"])
    if cfg["pretrain"]["enabled"] and is_embeddings_input(cfg["input"]):
        raise ValueError("pretrain.enabled=true trains on images; input.format=embeddings has none")
    if cfg["pretrain"]["enabled"]:
        from pipeline.ssl.train import run_pretrain

        out = counts["pretrain"] = run_pretrain(
            run,
            dict(cfg["input"]),
            dict(cfg["pretrain"]["ssl"]),
            dict(cfg["pretrain"]["train"]),
            seed=seed,
            force=force,
        )
        embed_cfg.update(backbone="ssl", checkpoint=out["checkpoint"], image_size=None)

    counts["embed"] = run_embed(
        run, dict(cfg["input"]), embed_cfg, preprocess=preprocess_specs(cfg["preprocess"]["stages"]), force=force
    )
    dedup = bool(cfg["dedup"]["enabled"])
    if dedup:
        counts["dedup"] = run_dedup(run, dict(cfg["dedup"]), force=force)
    counts["cluster"] = run_cluster(run, dict(cfg["kmeans"]), force=force, seed=seed, drop_duplicates=dedup)
    counts["sample"] = run_sample(run, dict(cfg["sample"]), force=force, seed=seed)
    if cfg["report"]["enabled"]:
        inputs = [EMBEDDINGS, *([DUPLICATES] if dedup else []), CLUSTERS, MANIFEST]
        with run.step("report", dict(cfg["report"]), inputs, force=force) as step:
            if not step.skipped:
                write_report(run, cfg)
    return counts
