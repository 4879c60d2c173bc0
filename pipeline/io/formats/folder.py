"""Folder trees: every non-hidden file under the root is one row (an image, or a refused row).

Names are listed as bytes (``os.fsencode``), carried as ``list<binary>`` and read by absolute path
under the input root. ``invalid-name`` (not UTF-8, or control characters: such a name cannot be an
id) and ``outside-input`` (a symbolic link resolving outside the root, unless
``input.follow_symlinks``) rows carry their reason in ``_read_error``. ``input.label_from_folder``:
the first folder below the root becomes ``label``.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
import pyarrow as pa

from pipeline.io.formats import InputFormat, register
from pipeline.io.fs import is_local, split_uri


def list_units(cfg: Any, path: str) -> list[dict]:
    """Units of ``input.files_per_unit`` file names each (bytes, relative to the root)."""
    fs, p, prefix = split_uri(path)
    root = p if fs.isdir(p) else os.path.dirname(p)
    names = _list_folder(fs, p, root, bool(cfg.follow_symlinks))
    return [
        {
            "kind": "folder",
            "file": "",
            "root": prefix + root,
            "rows": "",
            "names": names[i : i + cfg.files_per_unit],
            "offset": i,
        }
        for i in range(0, len(names), cfg.files_per_unit)
    ]


def _list_folder(fs: fsspec.AbstractFileSystem, p: str, root: str, follow_symlinks: bool) -> list[bytes]:
    """Sorted names (bytes, relative to ``root``) of the non-hidden files under ``p``.

    Local trees are walked with byte names, so a name that is not valid UTF-8 is listed (and later
    refused by name) rather than crashing the listing. Linked folders are descended only with
    ``follow_symlinks``; otherwise the link itself is listed, and refused if it leads outside.
    """
    if not is_local(fs):
        files = sorted(fs.find(p)) if fs.isdir(p) else [p]
        return [os.path.relpath(f, root).encode("utf-8") for f in files if not _hidden(f, root)]
    root_b = os.fsencode(root)
    if not os.path.isdir(p):
        return [os.path.basename(os.fsencode(p))]
    names: list[bytes] = []
    seen_dirs: set[bytes] = set()
    for dirpath, dirnames, filenames in os.walk(root_b, followlinks=follow_symlinks):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a link cycle, or a folder reached twice through links
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(b"."))  # sorted: a fixed walk order
        listed = [f for f in filenames if not f.startswith(b".")]
        if not follow_symlinks:  # a linked folder is not walked; one leading outside is refused
            listed += [
                d
                for d in dirnames
                if os.path.islink(os.path.join(dirpath, d)) and not _inside(os.path.join(dirpath, d), root_b)
            ]
        rel_dir = os.path.relpath(dirpath, root_b)
        names += [f if rel_dir == b"." else os.path.join(rel_dir, f) for f in listed]
    return sorted(names)


def _inside(path: bytes, root: bytes) -> bool:
    """Whether ``path``, all links resolved, lies under ``root`` (also resolved)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, real_root]) == real_root


def _hidden(f: str, root: str) -> bool:
    rel = os.path.relpath(f, root)
    return any(part.startswith(".") for part in rel.split(os.sep))


def safe_name(name: bytes) -> str | None:
    """``name`` as text when it can serve as an id (valid UTF-8, no control characters), else None."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if any(ord(c) < 32 or ord(c) == 127 for c in text) else text


def escaped_name(name: bytes) -> str:
    """A printable spelling of any byte name (``\\xNN`` escapes) for the id of a rejected row."""
    text = name.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def expand(cfg: Any, unit: dict) -> pa.Table:
    root = unit["root"]
    fs, root_path, _ = split_uri(root)
    local = is_local(fs)
    ids, uris, images, errors, labels = [], [], [], [], []
    for name in unit["names"]:
        text = safe_name(name)
        rel = (text if text is not None else escaped_name(name)).replace(os.sep, "/")
        uri = root.rstrip("/") + "/" + rel
        if text is None:
            data, err = None, "invalid-name: the file name is not valid UTF-8 or contains control characters"
        elif local:
            data, err = _read_inside(os.fsencode(root_path), name, bool(cfg.follow_symlinks))
        else:
            data, err = _read_file(uri)
        ids.append(rel)
        uris.append(uri)
        images.append(data)
        errors.append(err)
        labels.append(rel.split("/", 1)[0] if "/" in rel else None)
    cols: dict[str, Any] = {
        "id": ids,
        "uri": uris,
        "image": pa.array(images, pa.binary()),
        "_read_error": pa.array(errors, pa.string()),
    }
    if cfg.label_from_folder:
        cols["label"] = pa.array(labels, pa.string())
    return pa.table(cols)


def _read_inside(root: bytes, name: bytes, follow_symlinks: bool) -> tuple[bytes | None, str | None]:
    """Bytes of the local file ``root/name`` when it resolves inside ``root`` (or links may be
    followed); checked at read time, so a link swapped in after the listing is refused too."""
    path = os.path.join(root, name)
    if not follow_symlinks and not _inside(path, root):
        return None, "outside-input: a link that resolves outside the input folder (input.follow_symlinks=false)"
    try:
        with open(os.path.realpath(path), "rb") as fh:
            return fh.read(), None
    except OSError as exc:
        return None, f"unreadable file: {type(exc).__name__}: {exc.strerror or exc}"


def _read_file(uri: str) -> tuple[bytes | None, str | None]:
    try:
        with fsspec.open(uri, "rb") as fh:
            return fh.read(), None
    except OSError as exc:
        return None, f"unreadable file: {exc}"


register(InputFormat("folder", (), list_units, expand, whole_folder=False))
