"""Registries filled by their package's own modules: each module registers its entry on import."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

_IMPORTED: set[str] = set()


def import_entries(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (``path`` = its ``__path__``), once per process."""
    if package in _IMPORTED:
        return
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
    _IMPORTED.add(package)
