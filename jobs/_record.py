"""A job's record: the run directory it opens and ``run.json`` (config, seed, versions, code, host,
start, end, status, error line)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.artifacts import RUN_JSON
from pipeline.rundir import RunDir

log = logging.getLogger("strata")


def debug() -> bool:
    """Whether ``STRATA_DEBUG`` asks for tracebacks instead of one-line errors."""
    return os.environ.get("STRATA_DEBUG", "") not in ("", "0")


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (recorded in ``run.json``)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "strata",
        "torch",
        "torchvision",
        "ray",
        "faiss-cpu",
        "faiss-gpu",
        "numpy",
        "pyarrow",
        "lightly",
        "hydra-core",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def code_version() -> dict[str, Any]:
    """Strata's package version and, when the code is a git checkout, its commit and whether the
    tracked files differ from it (a job submitted with ``--working-dir`` usually has no ``.git``)."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    try:
        out: dict[str, Any] = {"version": version("strata")}
    except PackageNotFoundError:
        out = {"version": None}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD") if os.path.exists(os.path.join(repo, ".git")) else None
    out["git_commit"] = commit
    out["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return out


# The running job (name, start) and the run directory it opened: run.json gets its end and status.
JOB: dict[str, Any] = {}


def utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_job_end(error: str | None) -> None:
    """``finished_at``, ``seconds``, ``status`` (succeeded / failed) and ``error`` (its first line)
    into run.json of the run directory this job opened (none opened: nothing to record)."""
    run = JOB.pop("run", None)
    if run is None:
        return
    try:
        run.update_run_json(
            finished_at=utc_now(),
            seconds=round(time.monotonic() - JOB["t0"], 2),
            status="failed" if error else "succeeded",
            error=(error.strip().splitlines() or ["failed"])[0] if error else None,
        )
    except Exception:  # noqa: BLE001 - the job's own outcome matters more than its record
        log.warning("could not record the job's status in %s", run.path(RUN_JSON), exc_info=debug())


def open_run_dir(cfg: DictConfig) -> RunDir:
    """The run directory named by ``run_dir=``, with the resolved config (secrets masked), seed,
    versions, this job's name, start time, code version and host in ``run.json`` (its end time and
    status are added when the job ends)."""
    import socket

    run = RunDir(str(cfg.run_dir))
    from pipeline.security import redact

    job = {k: JOB.get(k) for k in ("job", "started_at")}
    if not job["started_at"]:  # called outside a strata job (a library user, a test)
        job["started_at"] = utc_now()
    run.update_run_json(
        config=redact(OmegaConf.to_container(cfg, resolve=True)),
        seed=cfg.get("seed"),
        versions=package_versions(),
        **job,
        finished_at=None,
        seconds=None,
        status="running",
        error=None,
        code=code_version(),
        host=socket.gethostname(),
    )
    if JOB:
        JOB["run"] = run
    return run


def read_run_json(run_dir: str) -> dict:
    """``run.json`` of ``run_dir`` as it is before this job records its own config (empty if none)."""
    return RunDir(run_dir).read_json(RUN_JSON, default={}) or {}
