"""The decorator every thin Hydra entrypoint wears (:func:`strata_job`): ``--help``, validation
before work, one-line errors, the job's record in ``run.json``. Its parts live by concern:
:mod:`jobs._config` (compose, validate, help, ``to_dict``), :mod:`jobs._ray` (Ray start-up),
:mod:`jobs._record` (the run directory and ``run.json``).

Every job is ``@strata_job("<config>", requires=[...])`` on a function of the resolved config.
Before Hydra creates anything or Ray starts, the command line is composed and checked: unknown
keys (with "did you mean"), values of the wrong type, input paths that do not exist, and run
directories that lack a finished step the job reads. Errors are one or two lines naming the key,
the value and the fix; ``STRATA_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from jobs._config import job_help, validate
from jobs._record import JOB, debug, record_job_end, utc_now
from pipeline.artifacts import Artifact
from pipeline.config import CONF_DIR, ConfigError

log = logging.getLogger("strata")


def _log_dir(run_dir: str) -> str:
    """Hydra's per-invocation log folder: inside a local run_dir, else a local mirror of the URI."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        return os.path.join("runs", "_remote_logs", run_dir.replace("://", "/"))
    return os.path.join(run_dir.removeprefix("file://"), "logs")


OmegaConf.register_new_resolver("strata_log_dir", _log_dir, replace=True)


def strata_job(config_name: str, *, requires: Iterable[Artifact] = (), main_keys: Iterable[str] = ()) -> Callable:
    """Decorator for a job's ``main(cfg)``: ``--help``, validation, short errors, then Hydra.

    ``requires``: artifacts that ``run_dir`` must hold (finished steps) before the job starts.
    ``main_keys``: the settings ``--help`` shows (with their comments from ``conf/``).
    """
    import hydra

    requires, main_keys = tuple(requires), tuple(main_keys)

    def wrap(fn: Callable[[DictConfig], Any]) -> Callable[[], None]:
        job = config_name.replace("_", "-")
        doc = sys.modules[fn.__module__].__doc__ or ""

        @functools.wraps(fn)
        def task(cfg: DictConfig) -> Any:
            from pipeline.progress import configure_logging

            _redact_hydra_outputs()
            configure_logging(verbose=bool(cfg.get("verbose", False)))
            JOB.clear()
            JOB.update(job=job, started_at=utc_now(), t0=time.monotonic())
            try:
                result = fn(cfg)
            except (KeyboardInterrupt, SystemExit) as exc:
                failed = not isinstance(exc, SystemExit) or exc.code not in (0, None)
                record_job_end(f"{type(exc).__name__}: {exc}".rstrip(": ") if failed else None)
                raise
            except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback with STRATA_DEBUG=1
                record_job_end(f"{type(exc).__name__}: {exc}")
                if debug():
                    raise
                log.debug("job failed", exc_info=True)
                _fail(job, f"{type(exc).__name__}: {exc}", code=1)
            record_job_end(None)
            return result

        hydra_main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")(task)

        def main() -> None:
            argv = sys.argv[1:]
            if any(a in ("-h", "--help") for a in argv):
                print(job_help(job, doc, config_name, main_keys))
                return
            if not any(a.startswith("-") for a in argv):  # Hydra's own flags (--cfg job, --multirun) go straight to it
                try:
                    validate(config_name, argv, requires)
                except ConfigError as exc:
                    if debug():
                        raise
                    _fail(job, str(exc), code=2)
            hydra_main()

        return main

    return wrap


def _redact_hydra_outputs() -> None:
    """Hydra has written the command line and config to its output folder: mask secrets there."""
    from hydra.core.hydra_config import HydraConfig

    from pipeline.security import redact_yaml_files

    hc = HydraConfig.get()
    if hc.output_subdir:
        redact_yaml_files(os.path.join(hc.runtime.output_dir, hc.output_subdir))


def _fail(job: str, message: str, code: int) -> None:
    lines = message.strip().splitlines() or ["failed"]
    print(f"strata {job}: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:3]:
        print(f"  {line}", file=sys.stderr)
    print(f"  (`strata {job} --help` lists the settings; STRATA_DEBUG=1 shows the traceback)", file=sys.stderr)
    raise SystemExit(code)
