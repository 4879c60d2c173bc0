"""Ray for a job: join a cluster or start a local single-node Ray (lazily, when a step asks)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger("strata")


def init_ray(cfg: DictConfig, *, lazy: bool = False) -> None:
    """Connect to a cluster (``RAY_ADDRESS`` / ``ray.address``) or start a local single-node Ray.

    ``lazy``: a local Ray is only registered here (:func:`pipeline.engine.set_ray_starter`) and
    starts when the first step needs it, so small runs whose steps all run in process skip it.
    """
    from pipeline import engine

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    rc = cfg.ray
    address = rc.address or os.environ.get("RAY_ADDRESS")
    local = not address or address == "local"
    engine.set_cluster(not local)
    if local:  # Ray reads this when imported: a local Ray binds 127.0.0.1, not the machine's network address
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if lazy and not engine.ray_running():
            engine.set_ray_starter(lambda: _init_ray_now(cfg, address))
            return
    _init_ray_now(cfg, address)


def _init_ray_now(cfg: DictConfig, address: str | None) -> None:
    rc = cfg.ray
    local = not address or address == "local"
    import ray

    # Ray Data's own progress block (every operator, every few seconds in `ray job logs`) only with
    # verbose=true: Strata's one-line progress covers the long steps.
    ray.data.DataContext.get_current().enable_progress_bars = bool(cfg.get("verbose", False))
    from pipeline.progress import configure_logging

    configure_logging(verbose=bool(cfg.get("verbose", False)))  # Ray's and Ray Data's own console handlers
    if ray.is_initialized():
        return
    if not local:
        ray.init(address=address, log_to_driver=rc.log_to_driver)
        log.info("connected to Ray cluster at %s: %s", address, ray.cluster_resources())
        return
    kwargs: dict[str, Any] = {
        "address": "local",
        "include_dashboard": rc.include_dashboard,
        "log_to_driver": rc.log_to_driver,
    }
    for key in ("num_cpus", "num_gpus", "object_store_memory"):
        if rc.get(key) is not None:
            kwargs[key] = int(rc[key]) if key == "object_store_memory" else rc[key]
    _avoid_taken_agent_port()
    start_local_ray(ray.init, kwargs)
    log.info("started local Ray: %s", ray.cluster_resources())


class LocalRayError(RuntimeError):
    """A local Ray could not start; the message says why and how to fix it."""


LOCAL_RAY_ATTEMPTS = 2


def start_local_ray(init: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """``init(**kwargs)``, retried once when the node times out during startup.

    Ray 2.60's raylet aborts when its dashboard agent has not reported its ports within 15 s: on a
    busy machine (the agent is slow to import) or when another Ray holds a port it needs. The second
    attempt usually finds the imports cached; if it fails too, one line says what to do.
    """
    import ray

    for attempt in range(1, LOCAL_RAY_ATTEMPTS + 1):
        try:
            init(**kwargs)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a plain Exception for a startup timeout
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == LOCAL_RAY_ATTEMPTS:
                raise LocalRayError(
                    f"the local Ray did not start ({attempt} attempts, 'timed out during startup'): this machine is "
                    "too busy for Ray's fixed start-up deadlines (15 s for the dashboard agent), or another Ray on it "
                    "holds a port this one needs; join the running Ray instead (ray.address=auto or "
                    "RAY_ADDRESS=<host>:<port>) or retry when the machine is idle (details: "
                    "/tmp/ray/session_latest/logs/raylet.err)"
                ) from exc
            log.warning("the local Ray timed out during startup (busy machine or a taken port); retrying once")


def _avoid_taken_agent_port() -> None:
    """Give a new local Ray a free dashboard-agent port when another Ray on this machine holds the
    fixed default (52365); without this the start times out after about a minute."""
    import socket

    from ray._private import parameter, ray_constants

    default = ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", default)) != 0:
            return  # free
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    original = parameter.RayParams.__init__

    def init(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("dashboard_agent_listen_port", port)
        original(self, *args, **kw)

    parameter.RayParams.__init__ = init
    log.info(
        "port %d is taken by another Ray on this machine; this job's Ray uses %d for its dashboard agent", default, port
    )
