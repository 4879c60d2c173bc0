"""Registries filled by their package's own modules: each module registers its entry on import."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

_IMPORTED: set[str] = set()

T = TypeVar("T")


def import_entries(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (``path`` = its ``__path__``), once per process."""
    if package in _IMPORTED:
        return
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
    _IMPORTED.add(package)


class Registry(Generic[T]):
    """Name -> entry of one package (``kind``: what an entry is, for errors); its modules add their
    entry with :meth:`register` when imported, :meth:`all` imports them on first use."""

    def __init__(self, kind: str, package: str, path: Iterable[str]) -> None:
        self.kind, self._package, self._path = kind, package, list(path)
        self.entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add an entry under ``name`` (a name is registered once)."""

        def add(entry: T) -> T:
            if name in self.entries and self.entries[name] != entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.entries[name] = entry
            return entry

        return add

    def all(self) -> dict[str, T]:
        """Every entry (imports each module of the package on first call)."""
        import_entries(self._package, self._path)
        return self.entries

    def get(self, name: str, setting: str | None = None) -> T:
        """The entry ``name``, or a one-line error naming the choices (``setting``: the config key)."""
        entries = self.all()
        if name not in entries:
            raise ValueError(f"unknown {setting or self.kind} {name!r}; choose one of {', '.join(sorted(entries))}")
        return entries[name]
