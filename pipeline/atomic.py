"""The one atomic-write helper: write at a temporary sibling, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import fsspec


@contextlib.contextmanager
def atomic_path(path: str, fs: fsspec.AbstractFileSystem | None = None, suffix: str = "") -> Iterator[str]:
    """Yield ``<path>.tmp-<random><suffix>`` on ``fs`` (the local filesystem by default) to write a
    file or a folder at (``suffix``: an extension the writer needs to see). When the block ends
    without error the temporary replaces ``path`` (an old folder is removed first), otherwise it is
    deleted. Readers see the old ``path`` or the whole new one, never a partial write (a rename on
    POSIX filesystems; object stores copy then delete)."""
    fs = fs or fsspec.filesystem("file")
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(tmp, recursive=True)
        raise
    folder = fs.isdir(tmp)
    if folder and fs.exists(path):
        fs.rm(path, recursive=True)
    fs.mv(tmp, path, recursive=folder)
