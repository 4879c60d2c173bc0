"""WebDataset tar shards: members sharing a key (path without extensions) form one sample, its
first image member the image, text members (``cls``, ``txt``, ``json``, ``label``) carried columns;
uris ``<shard>#<member>``. One unit per shard; a corrupt shard keeps the samples read before the
error and adds one refused row."""

from __future__ import annotations

import logging
import os
import tarfile
from typing import Any

import fsspec
import pyarrow as pa

from pipeline.io.formats import InputFormat, empty_rows, format_of_file, register
from pipeline.io.fs import split_uri

log = logging.getLogger(__name__)
SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".jp2")
TEXT_MEMBER_EXTENSIONS = ("cls", "txt", "json", "label")


def list_units(cfg: Any, path: str) -> list[dict]:
    """One unit per shard (a file, the shards of a folder, or a glob), sorted."""
    fs, p, prefix = split_uri(path)
    files = sorted(
        fs.glob(p)
        if any(c in p for c in "*?[")
        else ([f for f in fs.find(p) if format_of_file(f) == "tar"] if fs.isdir(p) else [p])
    )
    root = p if fs.isdir(p) else os.path.dirname(files[0]) if files else p
    return [
        {"kind": "tar", "file": prefix + f, "root": prefix + root, "rows": "", "names": None, "offset": 0}
        for f in files
    ]


def expand(cfg: Any, unit: dict) -> pa.Table:
    """The samples of one shard, in member order."""
    samples: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    error = None
    try:
        with fsspec.open(unit["file"], "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name
                base = os.path.basename(name)
                if base.startswith("."):
                    continue
                stem, _, ext = base.partition(".")
                key = f"{os.path.dirname(name)}/{stem}".lstrip("/")
                sample = samples.setdefault(key, {})
                if not sample:
                    order.append(key)
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                ext = ext.lower()
                if "." + ext in IMAGE_EXTENSIONS and "image" not in sample:
                    sample["image"], sample["uri"] = data, f"{unit['file']}#{name}"
                elif ext in TEXT_MEMBER_EXTENSIONS:
                    sample[ext] = data.decode("utf-8", errors="replace").strip()
    except (tarfile.TarError, OSError, EOFError) as exc:
        error = f"corrupt tar shard: {exc}"
    rows = []
    for key in order:
        s = samples[key]
        row = {
            "id": key,
            "uri": s.get("uri", f"{unit['file']}#{key}"),
            "image": s.get("image"),
            "_read_error": None if "image" in s else "no image member in tar sample",
        }
        row.update({e: s[e] for e in TEXT_MEMBER_EXTENSIONS if e in s})
        rows.append(row)
    if error:
        log.warning("%s: %s (kept %d samples read before the error)", unit["file"], error, len(rows))
        rows.append(
            {
                "id": f"{os.path.basename(unit['file'])}#<unreadable>",
                "uri": unit["file"],
                "image": None,
                "_read_error": error,
            }
        )
    if not rows:
        return empty_rows()
    table = pa.Table.from_pylist(rows)
    return table.set_column(table.schema.get_field_index("image"), "image", table.column("image").cast(pa.binary()))


def load(base: str, fragment: str) -> bytes:
    """Bytes of member ``fragment`` of the shard ``base`` (streamed: shards need not be seekable)."""
    with fsspec.open(base, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
        for member in tar:
            if member.name == fragment:
                return tar.extractfile(member).read()  # type: ignore[union-attr]
    raise KeyError(f"no member {fragment!r} in {base}")


register(InputFormat("tar", SUFFIXES, list_units, expand, load))
