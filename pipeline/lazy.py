"""Lazy package exports: ``from pipeline.embed import run_embed`` works, but importing a light
module of a package (``pipeline.embed.config``) does not import torch, FAISS or Ray with it.

Jobs validate their configuration before any heavy import, so a mistyped setting fails in about a
second instead of after the ML stack has loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a submodule) on first access of ``name``."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
