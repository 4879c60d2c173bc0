"""fsspec helpers shared by the input formats."""

from __future__ import annotations

import fsspec


def split_uri(uri: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path without scheme, scheme prefix to put back)."""
    fs, path = fsspec.core.url_to_fs(uri)
    prefix = "" if "://" not in uri or uri.startswith("file://") else uri.split("://", 1)[0] + "://"
    return fs, path, prefix


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether ``fs`` is the local filesystem."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
