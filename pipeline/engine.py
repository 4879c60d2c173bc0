"""Where a step runs: on Ray, or in this process when its input is small.

A job that would start its own local Ray (no ``ray.address``) hands the start to
:func:`set_ray_starter` instead of starting it: the first step that needs Ray calls
:func:`ensure_ray`, so a small run whose steps all run in process never pays Ray's start-up
(about 8 s and 0.9 GB here, then new worker processes that import ``ray.data`` and torch).
A job that joins a cluster connects at once and marks it with :func:`set_cluster`: steps then
stay on Ray, whose workers are where the data and the accelerators are.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

ENGINES = ("auto", "ray", "local")

_STATE: dict[str, object] = {"starter": None, "cluster": False}


def set_ray_starter(start: Callable[[], None] | None) -> None:
    """Register how this job starts Ray (its local head with the job's settings), run on first need."""
    _STATE["starter"] = start


def set_cluster(joined: bool) -> None:
    """Whether this job joined a Ray cluster (``ray.address``): ``auto`` engines then choose Ray."""
    _STATE["cluster"] = bool(joined)


def on_cluster() -> bool:
    return bool(_STATE["cluster"])


def ray_running() -> bool:
    """Ray is initialised in this process (without importing Ray when it was never imported)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def ensure_ray() -> None:
    """Start Ray now if this job deferred it (:func:`set_ray_starter`); a no-op when it runs.

    Without a registered starter (a library user, a test) nothing happens here and Ray starts as
    it always does, on first use with its own defaults.
    """
    if ray_running():
        return
    start = _STATE["starter"]
    if start is not None:
        _STATE["starter"] = None
        start()


def choose_engine(setting: str, size: int | None, local_max: int, *, what: str) -> str:
    """``ray`` or ``local`` for a step over ``size`` items (None: unknown until read).

    ``auto`` runs in process when the size is known and at most ``local_max`` and the job has not
    joined a cluster; otherwise on Ray.
    """
    if setting not in ENGINES:
        raise ValueError(f"{what}.engine={setting}: choose one of {', '.join(ENGINES)}")
    if setting != "auto":
        return setting
    if size is None or on_cluster():
        return "ray"
    return "local" if size <= local_max else "ray"
