"""Where a step runs: an :class:`Engine`, this process (:class:`LocalEngine`) or Ray (:class:`RayEngine`).

Every step gets its engine from one function, :func:`select_engine` (or :func:`engine_for`, its
form for a size and a threshold), from its own setting (``embed.engine``, ``dedup.copies.engine``,
``kmeans.in_process``) and whether its input is small; then it runs its work through the engine's
operations (:meth:`Engine.run_tasks`, :meth:`Engine.start_actors`), or, for a body written for one
engine (embed's Ray Data pipeline), runs that engine's body after :meth:`Engine.start`. ``auto``
chooses Ray for a job that joined a cluster (:func:`set_cluster`), for an input of unknown size,
and above the step's threshold; else this process.

A job that would start its own local Ray (no ``ray.address``) hands the start to
:func:`set_ray_starter` instead of starting it: the first :class:`RayEngine` operation calls
:func:`ensure_ray`, so a small run whose steps all run in process never pays Ray's start-up
(about 8 s and 0.9 GB here, then new worker processes that import ``ray.data`` and torch).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

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


class Engine:
    """The operations a step runs through; :class:`LocalEngine` and :class:`RayEngine` give the
    same results in the same order."""

    name = ""

    def start(self) -> None:
        """Make the engine ready (start a deferred Ray); steps call it before engine-specific work."""

    def run_tasks(self, fn: Callable, args: Iterable[tuple], shared: tuple = (), *, num_cpus: float) -> list:
        """``[fn(*shared, *a) for a in args]``, in input order."""
        raise NotImplementedError

    def start_actors(self, cls: type, kwargs: list[dict], *, num_cpus: float, **options: Any) -> list:
        """One instance of ``cls(**kw)`` per ``kw``: objects here, actor handles on Ray (``options``:
        Ray actor options such as ``num_gpus``, ``max_restarts``; ignored in this process)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LocalEngine(Engine):
    """Everything in this process, one item after another."""

    name = "local"

    def run_tasks(self, fn: Callable, args: Iterable[tuple], shared: tuple = (), *, num_cpus: float) -> list:
        return [fn(*shared, *a) for a in args]

    def start_actors(self, cls: type, kwargs: list[dict], *, num_cpus: float, **options: Any) -> list:
        return [cls(**kw) for kw in kwargs]


class RayEngine(Engine):
    """Ray tasks and actors (Ray started on first use, :func:`ensure_ray`)."""

    name = "ray"

    def start(self) -> None:
        ensure_ray()

    def run_tasks(self, fn: Callable, args: Iterable[tuple], shared: tuple = (), *, num_cpus: float) -> list:
        """One Ray task of ``num_cpus`` per ``args`` item; ``shared`` is put in the object store once,
        ``args`` are consumed lazily with at most two tasks per cluster CPU in flight, so the
        arguments of pending tasks do not fill the object store."""
        self.start()
        import ray

        refs = [ray.put(s) for s in shared]
        task = ray.remote(num_cpus=num_cpus)(fn)
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        out: dict[int, object] = {}
        pending: dict = {}
        for k, a in enumerate(args):
            if len(pending) >= limit:
                done, _ = ray.wait(list(pending), num_returns=1)
                out[pending.pop(done[0])] = ray.get(done[0])
            pending[task.remote(*refs, *a)] = k
        out.update({k: ray.get(ref) for ref, k in pending.items()})
        return [out[k] for k in range(len(out))]

    def start_actors(self, cls: type, kwargs: list[dict], *, num_cpus: float, **options: Any) -> list:
        self.start()
        import ray

        remote = ray.remote(num_cpus=num_cpus, **options)(cls)
        return [remote.remote(**kw) for kw in kwargs]


LOCAL, RAY = LocalEngine(), RayEngine()
BY_NAME: dict[str, Engine] = {"local": LOCAL, "ray": RAY}


IN_PROCESS = {True: "local", False: "ray"}  # a yes/no in-process setting (kmeans.in_process) as an engine


def select_engine(setting: str | bool, *, small: bool | None, what: str) -> Engine:
    """The engine of a step: ``setting`` (auto | ray | local, or true / false for in process) and
    whether its input is ``small`` (None: not known before reading it).

    ``auto`` is :class:`LocalEngine` when ``small`` and the job has not joined a cluster, else
    :class:`RayEngine`; ``ray`` and ``local`` are taken as given.
    """
    if isinstance(setting, bool):
        setting = IN_PROCESS[setting]
    if setting not in ENGINES:
        raise ValueError(f"{what}.engine={setting}: choose one of {', '.join(ENGINES)}")
    if setting != "auto":
        return BY_NAME[setting]
    return LOCAL if small and not on_cluster() else RAY


def engine_for(setting: str, size: int | None, local_max: int, *, what: str) -> Engine:
    """:func:`select_engine` for ``size`` items (None: unknown), small when ``size <= local_max``."""
    return select_engine(setting, small=None if size is None else size <= local_max, what=what)


def choose_engine(setting: str, size: int | None, local_max: int, *, what: str) -> str:
    """The name (``ray`` or ``local``) of :func:`engine_for`'s engine (capacity plans, records)."""
    return engine_for(setting, size, local_max, what=what).name
