"""Glue shared by the thin Hydra entrypoints: Ray start-up, logging, run directory."""
from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.rundir import RunDir

log = logging.getLogger("strata")


def _log_dir(run_dir: str) -> str:
    """Hydra's per-invocation log folder: inside a local run_dir, else a local mirror of the URI."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        return os.path.join("runs", "_remote_logs", run_dir.replace("://", "/"))
    return os.path.join(run_dir.removeprefix("file://"), "logs")


OmegaConf.register_new_resolver("strata_log_dir", _log_dir, replace=True)


def init_ray(cfg: DictConfig) -> None:
    """Connect to a cluster (``RAY_ADDRESS`` / ``ray.address``) or start a local single-node Ray."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    rc = cfg.get("ray", {}) or {}
    address = rc.get("address") or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, log_to_driver=rc.get("log_to_driver", True))
        log.info("connected to Ray cluster at %s: %s", address, ray.cluster_resources())
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs: dict[str, Any] = {
        "address": "local",
        "include_dashboard": rc.get("include_dashboard", False),
        "log_to_driver": rc.get("log_to_driver", True),
    }
    for key in ("num_cpus", "num_gpus", "object_store_memory"):
        if rc.get(key) is not None:
            kwargs[key] = int(rc[key]) if key == "object_store_memory" else rc[key]
    ray.init(**kwargs)
    log.info("started local Ray: %s", ray.cluster_resources())


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (recorded in ``run.json``)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("strata", "torch", "torchvision", "ray", "faiss-cpu", "faiss-gpu", "numpy", "pyarrow", "lightly", "hydra-core"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def open_run_dir(cfg: DictConfig) -> RunDir:
    """The run directory named by ``run_dir=``, with the resolved config, seed and versions in ``run.json``."""
    run = RunDir(str(cfg.run_dir))
    run.update_run_json(config=OmegaConf.to_container(cfg, resolve=True), seed=cfg.get("seed"), versions=package_versions())
    return run


def to_dict(cfg: DictConfig | None) -> dict:
    """Resolved plain-dict copy of a config node (for fingerprints and dataclass construction)."""
    return {} if cfg is None else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
