"""One source of configuration: every default lives in ``conf/`` and nowhere else.

``conf/<group>/<option>.yaml`` states each setting's default and, in a comment, what it does.
Library code that is called without a full config (tests, benchmarks, notebooks) fills the gaps
from the same files: :func:`load_group` for dict-shaped settings and :func:`schema` for typed
dataclasses, whose field types come from the class and whose defaults come from the YAML.
A YAML key the class does not declare, or a class default that repeats a YAML key, is an error at
import time, so the two can never drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot work: names the key, the value and the fix."""


@functools.cache
def _load(name: str, roots: tuple[str, ...]) -> dict[str, Any]:
    root = OmegaConf.create({})
    for r in ("base", *roots):
        node = OmegaConf.load(CONF_DIR / f"{r}.yaml")
        for key in ("defaults", "hydra"):
            node.pop(key, None)
        root = OmegaConf.merge(root, node)
    node = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    node.pop("defaults", None)
    root["_group"] = node  # ${seed}-style references resolve against the job's top-level keys
    return OmegaConf.to_container(root, resolve=True)["_group"]  # type: ignore[index]


def load_group(name: str, *roots: str) -> dict[str, Any]:
    """The settings of ``conf/<name>.yaml`` (a fresh copy); ``roots``: primary configs whose top-level
    keys it references besides ``conf/base.yaml`` (e.g. ``active`` for ``${budget}``)."""
    return copy.deepcopy(_load(name, tuple(roots)))


def with_defaults(
    name: str, cfg: dict[str, Any] | None, *roots: str, passthrough: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``cfg`` over the defaults of ``conf/<name>.yaml`` (nested dicts merged); unknown keys are an
    error, except ``passthrough`` keys, which are kept as given (a job's switch, a test hook)."""
    defaults = load_group(name, *roots)
    given = dict(cfg or {})
    check_keys({k: v for k, v in given.items() if k not in passthrough}, defaults, prefix=name.split("/")[0])
    return _merge(defaults, given)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def check_keys(given: dict[str, Any], known: dict[str, Any] | set[str], prefix: str) -> None:
    """Raise :class:`ConfigError` for keys of ``given`` not in ``known``, with a "did you mean"."""
    for key in given:
        if key not in known:
            raise ConfigError(unknown_key_message(f"{prefix}.{key}", [f"{prefix}.{k}" for k in known]))
        if isinstance(known, dict) and isinstance(known[key], dict) and known[key] and isinstance(given[key], dict):
            check_keys(given[key], known[key], f"{prefix}.{key}")


def unknown_key_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known)[:12])}"
    return f"unknown setting {key}: {hint}"


def schema(name: str, *roots: str, key: str | None = None, frozen: bool = False) -> Callable[[type[T]], type[T]]:
    """Class decorator: a dataclass whose defaults are the values of ``conf/<name>.yaml`` (or its
    ``key`` sub-table). Fields the YAML does not set keep the class's own default (internal settings)."""

    def wrap(cls: type[T]) -> type[T]:
        values = load_group(name, *roots)
        if key:
            values = values[key]
        declared = cls.__dict__.get("__annotations__", {})
        extra = sorted(set(values) - set(declared))
        if extra:
            raise TypeError(f"conf/{name}.yaml sets {extra}, which {cls.__name__} does not declare")
        for field_name, value in values.items():
            current = cls.__dict__.get(field_name, dataclasses.MISSING)
            if current is not dataclasses.MISSING and not (
                isinstance(current, dataclasses.Field) and current.default_factory is not dataclasses.MISSING
            ):
                raise TypeError(f"{cls.__name__}.{field_name} states a default that conf/{name}.yaml already states")
            if isinstance(current, dataclasses.Field):
                continue  # a nested schema (its own defaults come from the YAML too)
            if isinstance(value, (list, dict)):
                setattr(cls, field_name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, value)))
            else:
                setattr(cls, field_name, value)
        _order_fields(cls, declared)
        return dataclasses.dataclass(frozen=frozen)(cls)

    return wrap


def _order_fields(cls: type, declared: dict[str, Any]) -> None:
    """Put fields without a default first (dataclasses requires it), keeping the declared order otherwise."""
    required = [k for k in declared if k not in cls.__dict__]
    if required and list(declared)[: len(required)] != required:
        cls.__annotations__ = {k: declared[k] for k in [*required, *(k for k in declared if k not in required)]}
