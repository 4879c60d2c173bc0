"""Glue shared by the thin Hydra entrypoints: help, validation before work, Ray start-up, run directory.

Every job is ``@strata_job("<config>", requires=[...])`` on a function of the resolved config.
Before Hydra creates anything or Ray starts, the command line is composed and checked: unknown
keys (with "did you mean"), values of the wrong type, input paths that do not exist, and run
directories that lack a finished step the job reads. Errors are one or two lines naming the key,
the value and the fix; ``STRATA_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.artifacts import RUN_JSON, Artifact
from pipeline.config import CONF_DIR, ConfigError, unknown_key_message
from pipeline.rundir import RunDir

log = logging.getLogger("strata")


def _log_dir(run_dir: str) -> str:
    """Hydra's per-invocation log folder: inside a local run_dir, else a local mirror of the URI."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        return os.path.join("runs", "_remote_logs", run_dir.replace("://", "/"))
    return os.path.join(run_dir.removeprefix("file://"), "logs")


OmegaConf.register_new_resolver("strata_log_dir", _log_dir, replace=True)

# Library settings whose ranges and choices their own ``from_dict`` checks, by config key.
_VALIDATORS: dict[str, Callable[[dict], Any]] = {}


def _validators() -> dict[str, Callable[[dict], Any]]:
    if not _VALIDATORS:
        from pipeline.active.config import ActiveConfig
        from pipeline.coreset.config import coreset_config
        from pipeline.dedup.config import dedup_config
        from pipeline.embed.config import EmbedConfig
        from pipeline.kmeans.config import KMeansConfig
        from pipeline.sampling.config import sampling_config
        from pipeline.search.config import IndexConfig

        _VALIDATORS.update(
            kmeans=KMeansConfig.from_dict,
            active=ActiveConfig.from_dict,
            embed=EmbedConfig.from_dict,
            sample=sampling_config,
            dedup=dedup_config,
            coreset=coreset_config,
            search=IndexConfig.from_dict,
        )
    return _VALIDATORS


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
            _JOB.clear()
            _JOB.update(job=job, started_at=_utc_now(), t0=time.monotonic())
            try:
                result = fn(cfg)
            except (KeyboardInterrupt, SystemExit) as exc:
                failed = not isinstance(exc, SystemExit) or exc.code not in (0, None)
                _record_job_end(f"{type(exc).__name__}: {exc}".rstrip(": ") if failed else None)
                raise
            except Exception as exc:  # noqa: BLE001 - one line for the user; the traceback with STRATA_DEBUG=1
                _record_job_end(f"{type(exc).__name__}: {exc}")
                if _debug():
                    raise
                log.debug("job failed", exc_info=True)
                _fail(job, f"{type(exc).__name__}: {exc}", code=1)
            _record_job_end(None)
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
                    if _debug():
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


def _debug() -> bool:
    return os.environ.get("STRATA_DEBUG", "") not in ("", "0")


def _fail(job: str, message: str, code: int) -> None:
    lines = message.strip().splitlines() or ["failed"]
    print(f"strata {job}: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:3]:
        print(f"  {line}", file=sys.stderr)
    print(f"  (`strata {job} --help` lists the settings; STRATA_DEBUG=1 shows the traceback)", file=sys.stderr)
    raise SystemExit(code)


# ---- validation ------------------------------------------------------------------------------
def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """The job's config as Hydra would build it, without running anything (errors as ConfigError)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides)
    except MissingConfigException as exc:
        found = re.search(
            r"Could not find '([^']+)'.*?Available options in '[^']+':\s*(.*?)\s*Config search path", str(exc), re.S
        )
        if found:
            group, value = found.group(1).rsplit("/", 1)
            options = found.group(2).split()
            close = difflib.get_close_matches(value, options, n=1)
            hint = f"did you mean {group}={close[0]}?" if close else f"choose one of: {', '.join(options)}"
            raise ConfigError(f"{group}={value}: no such option; {hint}") from exc
        raise ConfigError(str(exc).splitlines()[0]) from exc
    except (HydraException, OmegaConfBaseException) as exc:
        found = re.search(r"Could not override '([^']+)'", str(exc))
        if found:
            with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
                known = _leaf_keys(hydra_compose(config_name, _group_choices(overrides)))
            raise ConfigError(unknown_key_message(found.group(1), known)) from exc
        raise ConfigError(str(exc).splitlines()[0]) from exc


def _group_choices(overrides: list[str]) -> list[str]:
    groups = {p.parent.name for p in CONF_DIR.glob("*/*.yaml")}
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] in groups]


def _leaf_keys(cfg: Any, prefix: str = "") -> list[str]:
    if not isinstance(cfg, DictConfig):
        return [prefix]
    out = [prefix] if prefix else []
    for key in cfg.keys():
        if key == "hydra":
            continue
        out += _leaf_keys(cfg._get_node(key), f"{prefix}.{key}" if prefix else str(key))
    return out


def _check_type(key: str, value: Any, default: Any) -> None:
    """``value`` must have ``default``'s type (None defaults accept anything; ints are floats too)."""
    if default is None or value is None:
        return
    want = (
        bool
        if isinstance(default, bool)
        else int
        if isinstance(default, int)
        else float
        if isinstance(default, float)
        else None
    )
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    if want is not None and not ok[want](value):
        name = {bool: "true or false", int: "an integer", float: "a number"}[want]
        raise ConfigError(f"{key}={value}: expected {name} (the default is {default})")


def validate(config_name: str, overrides: list[str], requires: Iterable[Artifact] = ()) -> DictConfig:
    """Compose and check the job's config; raise :class:`ConfigError` on the first problem."""
    cfg = compose(config_name, overrides)
    reference = compose(config_name, _group_choices(overrides))
    for override in overrides:
        key, _, _ = override.lstrip("+~").partition("=")
        if key in {o.split("=", 1)[0] for o in _group_choices(overrides)}:
            continue
        default = OmegaConf.select(reference, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not isinstance(default, (DictConfig,)) and not OmegaConf.is_list(default):
            _check_type(key, value, default)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key, check in _validators().items():
        if isinstance(resolved.get(key), dict):
            try:
                check(dict(resolved[key]))
            except ConfigError:
                raise
            except (ValueError, TypeError, KeyError) as exc:
                message = str(exc.args[0]) if exc.args else str(exc)
                raise ConfigError(message if message.startswith(key) else f"{key}: {message}") from exc
    path = (resolved.get("input") or {}).get("path") if isinstance(resolved.get("input"), dict) else None
    if path:
        import fsspec

        fs, local = fsspec.core.url_to_fs(str(path))
        if not any(ch in local for ch in "*?[") and not fs.exists(local):
            raise ConfigError(f"input.path={path}: no such file or folder")
        if resolved["input"].get("format") == "embeddings":  # columns and types from the schemas alone
            from pipeline.io.embeddings import check_embeddings_input
            from pipeline.io.sources import InputConfig

            try:
                check_embeddings_input(InputConfig.from_dict(resolved["input"]))
            except (ValueError, TypeError, KeyError) as exc:
                raise ConfigError(str(exc.args[0]) if exc.args else str(exc)) from exc
    run = RunDir(str(resolved["run_dir"]))
    for artifact in requires:
        if not run.has(artifact):
            raise ConfigError(
                f"run_dir={run.root} holds no finished {artifact.step!r} step ({artifact.name}): "
                f"run `strata {artifact.job} run_dir={run.root}` first"
            )
    return cfg


# ---- help ------------------------------------------------------------------------------------
def job_help(job: str, doc: str, config_name: str, main_keys: Iterable[str]) -> str:
    """What the job does (its docstring), the main settings with their defaults and comments."""
    cfg = compose(config_name, [])
    lines = [f"strata {job} [key=value ...]", "", doc.strip(), "", "main settings (default  # meaning):"]
    for key in main_keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        shown = OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value
        comment = yaml_comment(config_name, key)
        lines.append(f"  {key}={'null' if shown is None else shown}" + (f"  # {comment}" if comment else ""))
    groups = [
        d
        for d in OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("defaults", [])
        if isinstance(d, DictConfig | dict)
    ]
    if groups:
        lines.append("option groups: " + "  ".join(f"{k}={v}" for d in groups for k, v in d.items()))
    lines += [
        "",
        f"`strata {job} --cfg job` prints every setting; conf/{config_name}.yaml and conf/<group>/ document them.",
    ]
    return "\n".join(lines)


def yaml_comment(config_name: str, key: str) -> str:
    """The trailing comment of ``key`` in the YAML file that sets it (primary config, then its group)."""
    head, _, leaf = key.rpartition(".")
    candidates = [CONF_DIR / f"{config_name}.yaml"]
    if head:
        defaults = OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("defaults", [])
        for entry in defaults:
            if isinstance(entry, DictConfig | dict):
                for group, option in entry.items():
                    if group.split("@")[-1] == head.split(".")[0] or group == head.split(".")[0]:
                        candidates.insert(0, CONF_DIR / group.split("@")[0] / f"{option}.yaml")
    for path in candidates:
        if path.exists():
            for line in path.read_text().splitlines():
                found = re.match(rf"\s*{re.escape(leaf)}:[^#]*#\s*(.*)", line)
                if found:
                    return found.group(1).strip()
    return ""


# ---- running ---------------------------------------------------------------------------------
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
_JOB: dict[str, Any] = {}


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record_job_end(error: str | None) -> None:
    """``finished_at``, ``seconds``, ``status`` (succeeded / failed) and ``error`` (its first line)
    into run.json of the run directory this job opened (none opened: nothing to record)."""
    run = _JOB.pop("run", None)
    if run is None:
        return
    try:
        run.update_run_json(
            finished_at=_utc_now(),
            seconds=round(time.monotonic() - _JOB["t0"], 2),
            status="failed" if error else "succeeded",
            error=(error.strip().splitlines() or ["failed"])[0] if error else None,
        )
    except Exception:  # noqa: BLE001 - the job's own outcome matters more than its record
        log.warning("could not record the job's status in %s", run.path(RUN_JSON), exc_info=_debug())


def open_run_dir(cfg: DictConfig) -> RunDir:
    """The run directory named by ``run_dir=``, with the resolved config (secrets masked), seed,
    versions, this job's name, start time, code version and host in ``run.json`` (its end time and
    status are added when the job ends)."""
    import socket

    run = RunDir(str(cfg.run_dir))
    from pipeline.security import redact

    job = {k: _JOB.get(k) for k in ("job", "started_at")}
    if not job["started_at"]:  # called outside a strata job (a library user, a test)
        job["started_at"] = _utc_now()
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
    if _JOB:
        _JOB["run"] = run
    return run


def read_run_json(run_dir: str) -> dict:
    """``run.json`` of ``run_dir`` as it is before this job records its own config (empty if none)."""
    return RunDir(run_dir).read_json(RUN_JSON, default={}) or {}


def to_dict(cfg: DictConfig | None) -> dict:
    """Resolved plain-dict copy of a config node (for fingerprints and dataclass construction)."""
    return {} if cfg is None else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
