"""The curation pipeline as a list of steps over one run directory.

``run_curate`` runs: [pretrain] -> embed -> [dedup] -> cluster -> sample -> [report]. Each step is
a library call that skips itself when its done-marker exists (same config), so rerunning the same
command resumes after the last finished step; ``force`` recomputes everything.
"""
from __future__ import annotations

import importlib
import logging
import time
from typing import Any, Callable

from pipeline.rundir import RunDir

log = logging.getLogger(__name__)


def _call(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def preprocess_specs(stages: list[dict] | None) -> list[tuple[type, dict]]:
    """``[(StageClass, kwargs)]`` of the enabled ``preprocess.stages`` entries (``cls``, ``kwargs``, ``enabled``)."""
    specs = []
    for entry in stages or []:
        if not entry.get("enabled", True):
            continue
        if "cls" not in entry:
            raise KeyError(f"preprocess stage entry needs 'cls': {entry}")
        specs.append((_call(str(entry["cls"])), dict(entry.get("kwargs") or {})))
    return specs


def run_curate(run: RunDir, cfg: dict, *, force: bool = False) -> dict[str, Any]:
    """Run every enabled step of ``cfg`` (the resolved ``conf/curate.yaml``) in ``run``."""
    seed = int(cfg.get("seed", 0))
    timings: dict[str, float] = {}
    counts: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        log.info("== %s", name)
        out = fn() or {}
        timings[name] = round(time.perf_counter() - t0, 2)
        counts[name] = out
        run.update_run_json(timings={name: timings[name]}, counts={name: out})
        return out

    embed_cfg = dict(cfg["embed"])
    pretrain = cfg.get("pretrain") or {}
    if pretrain.get("enabled"):
        out = step("pretrain", lambda: _call("pipeline.ssl.run_pretrain")(run, dict(cfg["input"]), dict(pretrain["ssl"]), dict(pretrain.get("train") or {}), seed=seed, force=force))
        embed_cfg.update(backbone="ssl", checkpoint=out["checkpoint"], image_size=None)

    from pipeline.embed import run_embed

    step("embed", lambda: run_embed(run, dict(cfg["input"]), embed_cfg, preprocess=preprocess_specs((cfg.get("preprocess") or {}).get("stages")), force=force))
    if (cfg.get("dedup") or {}).get("enabled", False):
        step("dedup", lambda: _call("pipeline.dedup.run_dedup")(run, dict(cfg["dedup"]), force=force))
    step("cluster", lambda: _call("pipeline.kmeans.run_cluster")(run, dict(cfg["kmeans"]), force=force, seed=seed))
    step("sample", lambda: _call("pipeline.sampling.run_sample")(run, dict(cfg["sample"]), force=force, seed=seed))
    if (cfg.get("report") or {}).get("enabled", False):
        step("report", lambda: _call("pipeline.report.write_report")(run, cfg))
    return {"timings": timings, "counts": counts}
