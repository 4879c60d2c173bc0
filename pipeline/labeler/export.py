"""Labels out of the store: a Parquet table, an ImageFolder tree, and the id -> uri catalog in."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.io.sources import load_image_bytes
from pipeline.io.tables import list_parquet_files, write_parquet_atomic
from pipeline.labeler.store import LabelStore

LABELS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.string()),
        ("annotator", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("uri", pa.string()),
    ]
)
EVENTS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("id", pa.string()),
        ("label", pa.string()),
        ("annotator", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("undone", pa.bool_()),
        ("undoes", pa.int64()),
        ("page", pa.string()),
    ]
)


def read_catalog(path: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """``(ids, uris)`` from an embeddings folder or manifest Parquet (columns ``id``, ``uri``)."""
    ids: list[str] = []
    uris: list[str] = []
    for f in list_parquet_files(path):
        with fsspec.open(f, "rb") as fh:
            table = pq.read_table(fh, columns=["id", "uri"])
        ids.extend(table.column("id").to_pylist())
        uris.extend(table.column("uri").to_pylist())
    if not ids:
        raise ValueError(f"no rows with id/uri under {path!r}")
    return ids, uris


def labels_table(store: LabelStore) -> pa.Table:
    """Current labels: ``id, label, annotator, timestamp, uri`` in labeling order."""
    rows = store.current_rows()
    cols = list(zip(*rows)) if rows else [[] for _ in LABELS_SCHEMA]
    ts = [int(t * 1e6) for t in cols[3]]
    arrays = [
        pa.array(cols[0], pa.string()),
        pa.array(cols[1], pa.string()),
        pa.array(cols[2], pa.string()),
        pa.array(ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        pa.array(cols[4], pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=LABELS_SCHEMA)


def events_table(store: LabelStore) -> pa.Table:
    """The whole append-only log (``undone`` rows cancel the event ``undoes`` points at)."""
    ev = store.events()
    return pa.Table.from_pydict(
        {
            "seq": [e.seq for e in ev],
            "id": [e.id for e in ev],
            "label": [e.label for e in ev],
            "annotator": [e.annotator for e in ev],
            "timestamp": pa.array([int(e.timestamp * 1e6) for e in ev], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "undone": [e.undone for e in ev],
            "undoes": pa.array([e.undoes for e in ev], pa.int64()),
            "page": pa.array([e.page for e in ev], pa.string()),
        },
        schema=EVENTS_SCHEMA,
    )


def export_parquet(store: LabelStore, path: str, events_path: str | None = None) -> int:
    """Write current labels to ``path`` (and the event log to ``events_path``). Returns rows."""
    table = labels_table(store)
    write_parquet_atomic(table, path)
    if events_path is not None:
        write_parquet_atomic(events_table(store), events_path)
    return table.num_rows


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(item_id: str, uri: str) -> str:
    """A flat, collision-free file name for ``item_id``: sanitised id + short hash + extension.

    The hash keeps ids that sanitise alike apart (``a/b.jpg`` vs ``a_b.jpg``); the extension
    comes from the uri's file name when it has an image extension.
    """
    tail = uri.rsplit("#", 1)[-1] if "#" in uri else uri
    ext = os.path.splitext(tail)[1].lower()
    ext = ext if ext in _IMAGE_EXT else ""
    stem = os.path.splitext(item_id)[0] if ext and item_id.lower().endswith(ext) else item_id
    stem = _UNSAFE.sub("_", stem).strip("._")[:120] or "image"
    return f"{stem}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}{ext}"


_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
_PIL_EXT = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp", "GIF": ".gif"}


def export_imagefolder(store: LabelStore, root: str, mode: str = "symlink") -> dict[str, int]:
    """Write ``root/<label>/<file>`` for every current label; returns files per label.

    ``mode="symlink"`` links to local image files and copies bytes otherwise (Parquet rows, tar
    members, remote URIs); ``mode="copy"`` always writes the bytes.
    """
    if mode not in ("symlink", "copy"):
        raise ValueError(f"mode must be 'symlink' or 'copy', got {mode!r}")
    counts = {label: 0 for label in store.labels}
    for label in store.labels:
        os.makedirs(os.path.join(root, label), exist_ok=True)
    for item_id, label, _, _, uri in store.current_rows():
        name = file_name(item_id, uri)
        local = uri[7:] if uri.startswith("file://") else uri
        if mode == "symlink" and "://" not in local and "#" not in local and os.path.isfile(local):
            os.symlink(os.path.abspath(local), os.path.join(root, label, name))
        else:
            data = load_image_bytes(uri)
            if not os.path.splitext(name)[1]:
                with Image.open(io.BytesIO(data)) as im:
                    name += _PIL_EXT.get(im.format or "", ".img")
            with open(os.path.join(root, label, name), "wb") as fh:
                fh.write(data)
        counts[label] += 1
    return counts
