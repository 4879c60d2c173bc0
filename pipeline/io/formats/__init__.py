"""Input-format registry: one module per format in this package (``folder``, ``parquet``, ``tar``,
``embeddings``), found by name (``input.format``) or by file suffix (``input.format=auto``).

A format lists *work units* on the driver (``list_units(cfg, path) -> [unit dict]``, columns of
:data:`UNIT_SCHEMA`), expands one unit into image rows on a worker (``expand(cfg, unit) ->
pa.Table`` with ``id``, ``uri``, ``image``, ``_read_error`` and carried columns) and, when its
uris carry a fragment (``<file>#<row or member>``), loads one image back (``load(base, fragment)``).
A new format is one module here that calls :func:`register`, plus its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.discovery import Registry

UNIT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("file", pa.string()),
        ("root", pa.string()),
        ("rows", pa.string()),
        ("names", pa.list_(pa.binary())),
        ("offset", pa.int64()),
    ]
)


@dataclass(frozen=True)
class InputFormat:
    """One input format (see the module docstring for the three functions)."""

    name: str
    suffixes: tuple[str, ...]  # file suffixes of this format (``auto`` detection); () for folder trees
    list_units: Callable[[Any, str], list[dict]]
    expand: Callable[[Any, dict], pa.Table] | None = None  # None: not an image format (embeddings)
    load: Callable[[str, str], bytes] | None = None  # one image by ``<file>#<fragment>``
    whole_folder: bool = True  # a folder holding only files of this format is read as this format


REGISTRY: Registry[InputFormat] = Registry("input format", __name__, __path__)
FORMATS = REGISTRY.entries
registry = REGISTRY.all


def register(fmt: InputFormat) -> InputFormat:
    """Add ``fmt`` to :data:`FORMATS` under its name (a name is registered once)."""
    return REGISTRY.register(fmt.name)(fmt)


def input_format(name: str) -> InputFormat:
    """The format ``name``; an unknown name is a one-line error listing the known ones."""
    formats = registry()
    if name not in formats:
        raise ValueError(f"unknown input.format {name!r}: use auto, {', '.join(sorted(formats))}")
    return formats[name]


def format_of_file(path: str) -> str:
    """The format whose suffix ``path`` ends with; ``folder`` (a plain image file) otherwise."""
    return next((f.name for f in registry().values() if f.suffixes and path.endswith(f.suffixes)), "folder")


def empty_rows() -> pa.Table:
    """An expanded unit without rows."""
    return pa.table(
        {
            "id": pa.array([], pa.string()),
            "uri": pa.array([], pa.string()),
            "image": pa.array([], pa.binary()),
            "_read_error": pa.array([], pa.string()),
        }
    )
