"""Input sources: folder trees, Parquet files with an image-bytes column, WebDataset tar shards.

Every source yields rows ``id`` (stable string), ``uri`` (where the bytes live; see
:func:`load_image_bytes`), ``image`` (encoded bytes), ``_read_error`` (null unless the bytes could
not be read) and the carried input columns (``label`` from class folders, other Parquet columns,
WebDataset text members).

URIs: a file path/URI for folder trees; ``<parquet file>#<row>`` for Parquet rows;
``<tar file>#<member name>`` for tar members. Paths may be local or any fsspec URI.

Folder trees are listed with byte names (``os.fsencode``), carried as ``list<binary>`` (never a
newline-joined string) and read by absolute path under the input root. Every listed file becomes
exactly one row: an image, or a row whose ``_read_error`` says why it was refused:
``invalid-name`` (not UTF-8, or control characters such as a newline: such a name cannot be an id)
and ``outside-input`` (a symbolic link that resolves outside the input root, unless
``input.follow_symlinks`` is true). The embed step routes those rows to ``rejects.parquet``.

Reading is split into *work units* listed on the driver (one file, one Parquet row group, one tar
shard); Ray Data expands them into rows in parallel (:func:`read_images`), and the same expansion
runs without Ray in :func:`iter_images`.
"""

from __future__ import annotations

import functools
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import field, fields
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import schema

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".ppm", ".pgm", ".jp2")
TEXT_MEMBER_EXTENSIONS = ("cls", "txt", "json", "label")
BUNDLED_SAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data", "sample"
)


@schema("input/default")
class InputConfig:
    """Where the images are and how to read them; every default is in ``conf/input/default.yaml``."""

    path: str | None  # folder, Parquet file/folder/glob, tar shard(s); None = bundled sample
    format: str  # auto | folder | parquet | tar | embeddings
    image_column: str
    id_column: str
    embedding_column: str  # embeddings input: the vector column
    id_path: str | None  # embeddings input from .npy: the ids (.npy or one per line)
    label_from_folder: bool  # folder trees: first folder below the root -> ``label``
    columns: list[str] | None  # carried columns (None = all but the image column)
    limit: int | None  # read at most this many rows (debugging, tests)
    units_per_block: int  # work units per Ray Data block (small blocks balance the embedding actors)
    read_tasks: int | None  # concurrent read tasks (None: Ray Data decides); each is a worker process
    files_per_unit: int  # folder trees: image files per work unit
    follow_symlinks: bool  # folder trees: read links that resolve outside the root
    rows_per_unit: int  # Parquet: rows per work unit (a row group is split into slices)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, cfg: dict | None) -> InputConfig:
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        extra = {k: cfg.pop(k) for k in list(cfg) if k not in known}
        return cls(**cfg, extra=extra)

    @property
    def resolved_path(self) -> str:
        return self.path or BUNDLED_SAMPLE


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path without scheme, scheme prefix to put back)."""
    fs, path = fsspec.core.url_to_fs(uri)
    prefix = "" if "://" not in uri or uri.startswith("file://") else uri.split("://", 1)[0] + "://"
    return fs, path, prefix


def detect_format(path: str) -> str:
    """``parquet`` / ``tar`` / ``folder`` from the path (file suffixes or a folder's contents)."""
    fs, p, _ = _fs(path)
    if any(ch in p for ch in "*?["):
        matches = fs.glob(p)
        sample = matches[0] if matches else p
        return _format_of_file(sample)
    if not fs.exists(p):
        raise FileNotFoundError(f"input.path does not exist: {path!r}")
    if not fs.isdir(p):
        return _format_of_file(p)
    files = [f for f in fs.find(p) if not os.path.basename(f).startswith(".")]
    if not files:
        raise ValueError(f"input folder {path!r} is empty")
    kinds = {_format_of_file(f) for f in files}
    if kinds == {"parquet"}:
        return "parquet"
    if kinds == {"tar"}:
        return "tar"
    return "folder"


def _format_of_file(p: str) -> str:
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    if p.endswith(".npy"):
        return "embeddings"
    return "folder"


# ---- work units -------------------------------------------------------------------------------
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


def list_units(cfg: InputConfig) -> pa.Table:
    """Driver-side listing of work units: columns ``kind``, ``file``, ``root``, ``rows``
    (Parquet ``group:start:length``), ``names`` (folder trees: file names relative to ``root``, as
    bytes) and ``offset`` (first row number)."""
    path = cfg.resolved_path
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    fs, p, prefix = _fs(path)
    units: list[dict] = []
    if fmt == "folder":
        root = p if fs.isdir(p) else os.path.dirname(p)
        names = _list_folder(fs, p, root, bool(cfg.follow_symlinks))
        for i in range(0, len(names), cfg.files_per_unit):
            units.append(
                {
                    "kind": "folder",
                    "file": "",
                    "root": prefix + root,
                    "rows": "",
                    "names": names[i : i + cfg.files_per_unit],
                    "offset": i,
                }
            )
    elif fmt == "parquet":
        from pipeline.io.tables import list_parquet_files

        files = list_parquet_files(path)
        root = p if fs.isdir(p) else os.path.dirname(_fs(files[0])[1]) if files else p
        for f in files:
            with fsspec.open(f, "rb") as fh:
                meta = pq.ParquetFile(fh).metadata
            offset = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                for start in range(0, n, cfg.rows_per_unit):
                    length = min(cfg.rows_per_unit, n - start)
                    units.append(
                        {
                            "kind": "parquet",
                            "file": f,
                            "root": prefix + root,
                            "rows": f"{g}:{start}:{length}",
                            "names": None,
                            "offset": offset + start,
                        }
                    )
                offset += n
    elif fmt == "tar":
        files = sorted(
            fs.glob(p)
            if any(c in p for c in "*?[")
            else ([f for f in fs.find(p) if _format_of_file(f) == "tar"] if fs.isdir(p) else [p])
        )
        root = p if fs.isdir(p) else os.path.dirname(files[0]) if files else p
        units = [
            {"kind": "tar", "file": prefix + f, "root": prefix + root, "rows": "", "names": None, "offset": 0}
            for f in files
        ]
    elif fmt == "embeddings":
        raise ValueError(f"input.path={path} holds embeddings (input.format=embeddings), and this step needs images")
    else:
        raise ValueError(f"unknown input.format {fmt!r}: use auto, folder, parquet, tar or embeddings")
    if not units:
        raise ValueError(f"no input found at {path!r}")
    return pa.Table.from_pylist(units, schema=UNIT_SCHEMA)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _list_folder(fs: fsspec.AbstractFileSystem, p: str, root: str, follow_symlinks: bool) -> list[bytes]:
    """Sorted names (bytes, relative to ``root``) of the non-hidden files under ``p``.

    Local trees are walked with byte names, so a name that is not valid UTF-8 is listed (and later
    refused by name) rather than crashing the listing. Linked folders are descended only with
    ``follow_symlinks``; otherwise the link itself is listed, and refused if it leads outside.
    """
    if not _is_local(fs):
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


# ---- expanding units into rows -----------------------------------------------------------------
class ExpandUnits:
    """Ray Data callable: a batch of work units -> a batch of image rows (see module docstring)."""

    def __init__(self, cfg: dict | InputConfig):
        self.cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)

    def __call__(self, units: pa.Table) -> pa.Table:
        tables = [self._expand(u) for u in units.to_pylist()]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return _empty_rows()
        return pa.concat_tables(tables, promote_options="default")

    def _expand(self, unit: dict) -> pa.Table:
        return {"folder": self._folder, "parquet": self._parquet, "tar": self._tar}[unit["kind"]](unit)

    def _folder(self, unit: dict) -> pa.Table:
        root = unit["root"]
        fs, root_path, _ = _fs(root)
        local = _is_local(fs)
        ids, uris, images, errors, labels = [], [], [], [], []
        for name in unit["names"]:
            text = safe_name(name)
            rel = (text if text is not None else escaped_name(name)).replace(os.sep, "/")
            uri = root.rstrip("/") + "/" + rel
            if text is None:
                data, err = None, "invalid-name: the file name is not valid UTF-8 or contains control characters"
            elif local:
                data, err = _read_inside(os.fsencode(root_path), name, bool(self.cfg.follow_symlinks))
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
        if self.cfg.label_from_folder:
            cols["label"] = pa.array(labels, pa.string())
        return pa.table(cols)

    def _parquet(self, unit: dict) -> pa.Table:
        with fsspec.open(unit["file"], "rb") as fh:
            group, start, length = (int(v) for v in unit["rows"].split(":"))
            table = pq.ParquetFile(fh).read_row_group(group).slice(start, length)
        col = self.cfg.image_column
        if col not in table.column_names:
            raise KeyError(
                f"{unit['file']}: no image column {col!r} (columns: {table.column_names}); set input.image_column"
            )
        rows = range(unit["offset"], unit["offset"] + table.num_rows)
        uris = pa.array([f"{unit['file']}#{r}" for r in rows], pa.string())
        if self.cfg.id_column in table.column_names:
            ids = table.column(self.cfg.id_column).cast(pa.string())
        else:
            rel = os.path.relpath(_fs(unit["file"])[1], _fs(unit["root"])[1]).replace(os.sep, "/")
            ids = pa.array([f"{rel}#{r}" for r in rows], pa.string())
        carried = [c for c in (self.cfg.columns or table.column_names) if c not in (col, self.cfg.id_column, "uri")]
        out = {
            "id": ids,
            "uri": uris,
            "image": table.column(col).cast(pa.binary()),
            "_read_error": pa.nulls(table.num_rows, pa.string()),
        }
        out.update({c: table.column(c) for c in carried})
        return pa.table(out)

    def _tar(self, unit: dict) -> pa.Table:
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
            return _empty_rows()
        table = pa.Table.from_pylist(rows)
        return table.set_column(table.schema.get_field_index("image"), "image", table.column("image").cast(pa.binary()))


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


def _empty_rows() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([], pa.string()),
            "uri": pa.array([], pa.string()),
            "image": pa.array([], pa.binary()),
            "_read_error": pa.array([], pa.string()),
        }
    )


# ---- public readers -----------------------------------------------------------------------------
def iter_images(cfg: dict | InputConfig, batch_units: int = 1) -> Iterator[pa.Table]:
    """Plain (no Ray) reader: yields row batches in the same order as :func:`read_images`."""
    cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)
    units = list_units(cfg)
    expand = ExpandUnits(cfg)
    seen = 0
    for start in range(0, units.num_rows, batch_units):
        batch = expand(units.slice(start, batch_units))
        if cfg.limit is not None:
            batch = batch.slice(0, max(0, cfg.limit - seen))
        seen += batch.num_rows
        if batch.num_rows:
            yield batch
        if cfg.limit is not None and seen >= cfg.limit:
            return


def read_images(cfg: dict | InputConfig):
    """Ray Dataset of image rows; block order follows the input order (deterministic ids)."""
    import ray

    cfg = cfg if isinstance(cfg, InputConfig) else InputConfig.from_dict(cfg)
    units = list_units(cfg)
    step = max(1, cfg.units_per_block)
    # One block per group of units, built on the driver: no repartition (an all-to-all step whose
    # default 1-CPU tasks may not fit beside the embedding actors on small nodes).
    ds = ray.data.from_arrow([units.slice(i, step) for i in range(0, units.num_rows, step)])
    compute = ray.data.TaskPoolStrategy(size=cfg.read_tasks) if cfg.read_tasks else None
    ds = ds.map_batches(
        _expand_units,
        fn_kwargs={"cfg": cfg},
        batch_size=cfg.units_per_block,
        batch_format="pyarrow",
        num_cpus=0.25,
        compute=compute,
    )
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    return ds


def _expand_units(units: pa.Table, cfg: InputConfig) -> pa.Table:
    return ExpandUnits(cfg)(units)


@functools.lru_cache(maxsize=64)
def _parquet_layout(path: str) -> tuple[np.ndarray, str]:
    """(first row of each row group + total, name of the image-bytes column) of a Parquet file."""
    with fsspec.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        schema = pf.schema_arrow
    column = (
        "image"
        if "image" in schema.names
        else next(f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
    )
    return np.concatenate([[0], np.cumsum(sizes)]), column


@functools.lru_cache(maxsize=2)
def _parquet_row_group(path: str, group: int, column: str) -> pa.ChunkedArray:
    """One row group's image column; cached so that serving neighbouring rows reads it once."""
    with fsspec.open(path, "rb") as fh:
        return pq.ParquetFile(fh).read_row_group(group, columns=[column]).column(column)


def load_image_bytes(uri: str) -> bytes:
    """Encoded bytes of one image by its ``uri`` (file, ``file.parquet#row``, ``shard.tar#member``)."""
    base, _, frag = uri.partition("#")
    if not frag:
        with fsspec.open(uri, "rb") as fh:
            return fh.read()
    if base.endswith(".parquet"):
        row = int(frag)
        starts, column = _parquet_layout(base)
        group = int(np.searchsorted(starts, row, side="right")) - 1
        if group < 0 or group >= len(starts) - 1:
            raise KeyError(f"row {row} is past the end of {base}")
        return _parquet_row_group(base, group, column)[row - int(starts[group])].as_py()
    if base.endswith((".tar", ".tar.gz", ".tgz")):
        with fsspec.open(base, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            for member in tar:
                if member.name == frag:
                    return tar.extractfile(member).read()  # type: ignore[union-attr]
        raise KeyError(f"no member {frag!r} in {base}")
    with fsspec.open(uri, "rb") as fh:  # a plain file whose name contains '#'
        return fh.read()
