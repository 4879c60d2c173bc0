"""One writer per export format (a registry): ImageFolder, WebDataset shards, JSONL.

A writer gets the source table, the source row of every sample, the sample keys, the config, the
output folder (a path on ``fs``, any fsspec filesystem) and returns its counts.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator

import fsspec
import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.export.rows import ExportConfig, class_column, class_name
from pipeline.io.sources import load_image_bytes

CHUNK = 512  # samples whose images are loaded together (sorted by uri, so a Parquet row group is read once)
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"))
_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes, from the magic number (PIL for the rarer formats)."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    with Image.open(io.BytesIO(data)) as im:
        return _PIL_EXT.get(im.format or "", ".img")


def _checked_extension(data: bytes) -> tuple[str | None, str | None]:
    """(extension, None) of image bytes, or (None, error) when they are not an image PIL can read."""
    try:
        return image_extension(data), None
    except Exception as exc:  # noqa: BLE001 - recorded per sample, the export goes on
        return None, f"not an image: {type(exc).__name__}: {exc}"[:200]


def _local_file(uri: str) -> str | None:
    path = uri[7:] if uri.startswith("file://") else uri
    return path if "://" not in path and "#" not in path and os.path.isfile(path) else None


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def iter_images(uris: list[str], link: bool) -> Iterator[tuple[int, str | None, bytes | None, str | None]]:
    """(sample, local path to link to, bytes, error) of every sample in order; with ``link``, local
    image files are not read. Images of a chunk are loaded once each, in uri order."""
    for start in range(0, len(uris), CHUNK):
        chunk = uris[start : start + CHUNK]
        local = {u: _local_file(u) for u in set(chunk)} if link else {}
        loaded: dict[str, bytes | Exception] = {}
        for u in sorted(set(chunk) - {u for u, p in local.items() if p}):
            try:
                loaded[u] = load_image_bytes(u)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the export goes on
                loaded[u] = exc
        for offset, u in enumerate(chunk):
            if local.get(u):
                yield start + offset, local[u], None, None
            elif isinstance(loaded[u], Exception):
                yield start + offset, None, None, f"{type(loaded[u]).__name__}: {loaded[u]}"[:200]
            else:
                yield start + offset, None, loaded[u], None  # type: ignore[misc]


def json_rows(table: pa.Table) -> list[dict]:
    """Rows as JSON-ready dicts (binary columns left out; dates and other values as text)."""
    keep = [f.name for f in table.schema if not (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))]
    return table.select(keep).to_pylist()


def _dumps(row: dict) -> str:
    return json.dumps(row, default=str, ensure_ascii=False)


def write_imagefolder(
    table: pa.Table, rows: np.ndarray, keys: list[str], cfg: ExportConfig, out: str, fs: fsspec.AbstractFileSystem
) -> dict:
    """``out/<class>/<key><ext>``: links to local image files (``mode=link``, local output) or the bytes."""
    column = class_column(table, cfg)
    classes = [class_name(v) for v in table.column(column).to_pylist()]
    uris = table.column("uri").to_pylist()
    link = cfg.mode == "link" and _is_local(fs)
    per_class: Counter[str] = Counter()
    counts = {"linked": 0, "copied": 0, "failed": []}
    for c in sorted(set(classes[r] for r in rows)):
        fs.makedirs(f"{out}/{c}", exist_ok=True)
    for i, path, data, error in iter_images([uris[r] for r in rows], link):
        r = int(rows[i])
        ext, error = (None, error) if error or path else _checked_extension(data)
        if error:
            counts["failed"].append({"id": table.column("id")[r].as_py(), "error": error})
            continue
        if path:
            os.symlink(os.path.abspath(path), f"{out}/{classes[r]}/{keys[i]}{os.path.splitext(path)[1].lower()}")
            counts["linked"] += 1
        else:
            with fs.open(f"{out}/{classes[r]}/{keys[i]}{ext}", "wb") as fh:
                fh.write(data)
            counts["copied"] += 1
        per_class[classes[r]] += 1
    return {**counts, "class_column": column, "classes": dict(sorted(per_class.items()))}


def write_webdataset(
    table: pa.Table, rows: np.ndarray, keys: list[str], cfg: ExportConfig, out: str, fs: fsspec.AbstractFileSystem
) -> dict:
    """``out/shard-000000.tar`` ...: ``export.shard_size`` samples each, ``<key><ext>`` (the image
    bytes) + ``<key>.json`` (the source row). Tar members are always copies."""
    records = json_rows(table)
    uris = table.column("uri").to_pylist()
    shards, failed = [], []
    tar = handle = None
    written = 0
    try:
        for i, _, data, error in iter_images([uris[r] for r in rows], link=False):
            r = int(rows[i])
            ext, error = (None, error) if error else _checked_extension(data)
            if error:
                failed.append({"id": records[r]["id"], "error": error})
                continue
            if written % cfg.shard_size == 0:
                if tar is not None:
                    tar.close()
                    handle.close()
                shards.append(f"shard-{len(shards):06d}.tar")
                handle = fs.open(f"{out}/{shards[-1]}", "wb")
                tar = tarfile.open(fileobj=handle, mode="w|")
            for name, payload in (
                (keys[i] + ext, data),
                (keys[i] + ".json", _dumps(records[r]).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(payload), 0o644, 0
                tar.addfile(info, io.BytesIO(payload))
            written += 1
    finally:
        if tar is not None:
            tar.close()
            handle.close()
    return {"shards": shards, "copied": written, "failed": failed}


def write_jsonl(
    table: pa.Table, rows: np.ndarray, keys: list[str], cfg: ExportConfig, out: str, fs: fsspec.AbstractFileSystem
) -> dict:
    """``out/manifest.jsonl``: one source row per line (repeated rows repeat their line); no images needed."""
    records = json_rows(table)
    with fs.open(f"{out}/manifest.jsonl", "w", encoding="utf-8") as fh:
        for r in rows.tolist():
            fh.write(_dumps(records[r]) + "\n")
    return {"lines": int(len(rows))}


WRITERS: dict[str, Callable[..., dict]] = {
    "imagefolder": write_imagefolder,
    "webdataset": write_webdataset,
    "jsonl": write_jsonl,
}
NEEDS_IMAGES = ("imagefolder", "webdataset")
