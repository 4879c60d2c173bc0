"""Config of a job before it runs: compose the command line as Hydra would, check it (unknown keys
with "did you mean", types, missing paths, required finished steps, library validators) and
render ``--help`` from the comments in ``conf/``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.artifacts import Artifact
from pipeline.config import CONF_DIR, ConfigError, unknown_key_message
from pipeline.rundir import RunDir

# Library settings whose ranges and choices their own ``from_dict`` checks, by config key.
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


def to_dict(cfg: DictConfig | None) -> dict:
    """Resolved plain-dict copy of a config node (for fingerprints and dataclass construction)."""
    return {} if cfg is None else OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
