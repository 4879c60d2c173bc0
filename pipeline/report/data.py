"""Everything the run report shows, read from a run directory (each section optional).

Sources: ``run.json`` (config, timings, counts), ``embeddings/`` (kept rows, carried ``label``),
``rejects.parquet``, ``dedup/duplicates.parquet`` (counts; removed/kept pairs), ``clusters/`` (hierarchical k-means levels),
``manifest.parquet`` (selection with ``multiplicity``), ``active/rounds.parquet`` and
``progress.log``. Only small columns are read (ids, uris, labels, cluster ids); embeddings never are.
"""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.artifacts import (
    ACTIVE_ROUNDS,
    CLUSTERS_JSON,
    DUPLICATES,
    EMBEDDINGS,
    MANIFEST,
    REJECTS,
    RUN_JSON,
    embedding_files,
)
from pipeline.io.tables import list_parquet_files
from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.rundir import RunDir
from pipeline.sampling.water_filling import water_filling

log = logging.getLogger(__name__)


@dataclass
class LevelSizes:
    """Cluster sizes of one level, in level-1 items: all clustered items and the selection."""

    level: int
    before: np.ndarray  # (k,) items per cluster before balanced sampling
    after: np.ndarray | None  # (k,) selected items (counting multiplicity), None without a manifest


@dataclass
class Thumb:
    id: str
    src: str | None  # data: URI of a JPEG thumbnail, None when the image could not be loaded
    note: str = ""


@dataclass
class GalleryCluster:
    """One level-1 cluster of the cluster browser: its members closest to the centroid first."""

    cluster: int  # level-1 cluster id
    size: int
    selected: int | None  # selected items (counting multiplicity), None without a manifest
    thumbs: list[Thumb]
    top_label: tuple[str, float] | None = None  # most frequent carried label and its share


@dataclass
class LabelBalance:
    """Label shares before / after balanced sampling and how the level-1 clusters split each label.

    ``footprint[l] = sum_c n_lc / n_c``: the number of level-1 clusters label ``l`` fills, counting
    each cluster by the label's share of it. ``predicted[l] = sum_c a_c n_lc / n_c / sum_c a_c``
    with ``a_c`` the items selected from cluster ``c``: the label's share if each cluster's
    selection had the cluster's label mix, i.e. what the per-cluster counts alone explain.
    """

    counts: dict[str, tuple[int, int]]  # label -> (kept input items, selected items)
    footprint: dict[str, float] | None = None
    predicted: dict[str, float] | None = None
    n_clusters: int = 0


@dataclass
class DuplicatePair:
    """A removed image next to the image kept in its place."""

    removed: Thumb
    kept: Thumb
    kind: str  # exact | near_duplicate | semantic
    similarity: float | None
    distance: float | None  # pHash copy bits (near_duplicate), 1 - cosine (semantic), 0 (exact)


@dataclass
class ReportData:
    root: str
    config: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int | None] = field(default_factory=dict)
    reject_reasons: dict[str, int] = field(default_factory=dict)
    levels: list[LevelSizes] = field(default_factory=list)
    gallery: list[GalleryCluster] = field(default_factory=list)
    gallery_hidden: int = 0  # non-empty clusters left out of the browser (``max_clusters``)
    duplicate_pairs: list[DuplicatePair] = field(default_factory=list)
    copy_detection: dict | None = None  # run.json's dedup copies record (threshold, reliable, estimates)
    labels: LabelBalance | None = None
    active: pa.Table | None = None
    progress: list[str] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # sample step: ``strategy`` asked, ``objective`` run


def _read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file or a folder of ``part-*.parquet`` (only ``columns`` that exist)."""
    files = list_parquet_files(path)
    tables = []
    for f in files:
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            cols = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            tables.append(pf.read(columns=cols))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def _num_rows(path: str) -> int:
    total = 0
    for f in list_parquet_files(path):
        with fsspec.open(f, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def gather_counts(run: RunDir, run_json: dict) -> tuple[dict[str, int | None], dict[str, int]]:
    """(counts: read, rejected, kept, deduplicated, clustered, selected, unique_selected; reject reasons).

    Files are authoritative (``read = kept + rejected``); ``run.json`` fills in what is missing.
    """
    stage = run_json.get("counts", {}) or {}
    embed = stage.get("embed", {}) or {}
    kept = _num_rows(run.path(EMBEDDINGS)) if run.exists(EMBEDDINGS) else embed.get("kept")
    rejected, reasons = embed.get("rejected"), dict(embed.get("reject_reasons") or {})
    if run.exists(REJECTS):
        rej = _read_parquet(run.path(REJECTS), ["reason"])
        rejected = rej.num_rows
        reasons = defaultdict(int)
        for r in rej.column("reason").to_pylist() if rej.num_rows else []:
            reasons[str(r).split(":")[0]] += 1
        reasons = dict(reasons)
    dups = _num_rows(run.path(DUPLICATES)) if run.is_current(DUPLICATES) else None
    cluster = stage.get("cluster", {}) or {}
    dups = _first(dups, cluster.get("n_dropped_duplicates"), 0 if kept is not None else None)
    selected = unique = None
    if run.exists(MANIFEST):
        mult = _read_parquet(run.path(MANIFEST), ["multiplicity"])
        unique = mult.num_rows
        selected = (
            int(pc.sum(mult.column("multiplicity")).as_py() or 0) if "multiplicity" in mult.column_names else unique
        )
    sample = stage.get("sample", {}) or {}
    counts = {
        "read": _first(embed.get("read"), None if kept is None or rejected is None else kept + rejected),
        "rejected": rejected,
        "kept": kept,
        "deduplicated": dups,
        "clustered": cluster.get("n_points"),
        "selected": _first(selected, sample.get("n_selected")),
        "unique_selected": _first(unique, sample.get("n_rows")),
    }
    return counts, reasons


def gather_levels(run: RunDir) -> tuple[list[LevelSizes], list[Any], pa.Table | None]:
    """Per-level cluster sizes in level-1 items, before/after sampling; also the levels and manifest."""
    if not run.exists(CLUSTERS_JSON):
        return [], [], None
    _, levels = load_levels(run)
    manifest = None
    if run.exists(MANIFEST):
        cols = ["id", "multiplicity", "label", *(f"level_{i}" for i in range(1, len(levels) + 1))]
        manifest = _read_parquet(run.path(MANIFEST), cols)
    out = []
    item_cluster = None
    for lv, level in enumerate(levels, start=1):
        # level l clusters the level l-1 clusters: compose to get every point's level-l cluster
        item_cluster = level.assignments if item_cluster is None else level.assignments[item_cluster]
        k = len(level.offsets) - 1
        before = np.bincount(item_cluster, minlength=k)
        after = None
        col = f"level_{lv}"
        if manifest is not None and col in manifest.column_names:
            weights = manifest.column("multiplicity").to_numpy() if "multiplicity" in manifest.column_names else None
            after = np.bincount(manifest.column(col).to_numpy(), weights=weights, minlength=k).astype(np.int64)
        out.append(LevelSizes(lv, before, after))
    return out, levels, manifest


def _id_to_uri(run: RunDir, ids: list[str]) -> dict[str, str]:
    """uri of each of ``ids``, read from the embeddings' ``id``/``uri`` columns one file at a time."""
    wanted = pa.array(ids, pa.string())
    found: dict[str, str] = {}
    for f in embedding_files(run):
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            if "uri" not in pf.schema_arrow.names:
                return {}
            t = pf.read(columns=["id", "uri"])
        t = t.filter(pc.is_in(t.column("id"), value_set=wanted))
        found.update(zip(t.column("id").to_pylist(), t.column("uri").to_pylist()))
        if len(found) == len(ids):
            break
    return found


def load_many_bytes(uris: list[str]) -> dict[str, bytes | Exception]:
    """Encoded bytes of every uri; Parquet rows of one file are read with one pass per row group.

    Same addressing as :func:`pipeline.io.sources.load_image_bytes` (``file.parquet#row``), which
    reads a whole row group per call; a gallery asks for dozens of rows of the same few files.
    """
    from pipeline.io.sources import load_image_bytes

    out: dict[str, bytes | Exception] = {}
    by_file: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for uri in uris:
        base, _, frag = uri.partition("#")
        if base.endswith(".parquet") and frag.isdigit():
            by_file[base].append((int(frag), uri))
            continue
        try:
            out[uri] = load_image_bytes(uri)
        except Exception as exc:  # noqa: BLE001 - a missing image is shown as such, not fatal
            out[uri] = exc
    for base, rows in by_file.items():
        try:
            with fsspec.open(base, "rb") as fh:
                pf = pq.ParquetFile(fh)
                names = pf.schema_arrow.names
                col = (
                    "image"
                    if "image" in names
                    else next(n for n in names if pa.types.is_binary(pf.schema_arrow.field(n).type))
                )
                starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)])
                groups = np.searchsorted(starts, [r for r, _ in rows], side="right") - 1
                for g in np.unique(groups[groups < pf.metadata.num_row_groups]):
                    data = pf.read_row_group(int(g), columns=[col]).column(0)
                    for (row, uri), gg in zip(rows, groups):
                        if gg == g:
                            out[uri] = data[row - int(starts[g])].as_py()
            for row, uri in rows:
                out.setdefault(uri, KeyError(f"row {row} is past the end of {base}"))
        except Exception as exc:  # noqa: BLE001
            for _, uri in rows:
                out.setdefault(uri, exc)
    return out


def _thumbs(run: RunDir, ids: list[str], thumb_size: int) -> dict[str, Thumb]:
    """Inline JPEG thumbnail of each of ``ids`` (a note instead when the image cannot be loaded)."""
    from pipeline.io.images import thumbnail_jpeg

    uris = _id_to_uri(run, ids)
    if not uris:  # embeddings made elsewhere (text, audio...): no pictures, the ids are shown alone
        return {i: Thumb(i, None, "no image (embeddings input)") for i in ids}
    images = load_many_bytes(sorted(set(uris.values())))
    out = {}
    for image_id in ids:
        data = images.get(uris.get(image_id, ""), KeyError("no uri"))
        try:
            if isinstance(data, Exception):
                raise data
            src = "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(data, thumb_size, quality=75)).decode()
            out[image_id] = Thumb(image_id, src)
        except Exception as exc:  # noqa: BLE001 - show the gap instead of failing the report
            out[image_id] = Thumb(image_id, None, f"{type(exc).__name__}: {exc}"[:120])
    return out


def gather_duplicate_pairs(run: RunDir, n_pairs: int, thumb_size: int) -> list[DuplicatePair]:
    """Up to ``n_pairs`` removed images next to their kept image, shared out over the kinds; within a
    kind the largest distances first (the pairs nearest the threshold are the ones worth checking)."""
    if n_pairs <= 0 or not run.is_current(DUPLICATES):
        return []
    dups = _read_parquet(run.path(DUPLICATES), ["id", "kept_id", "kind", "similarity", "distance"])
    if not {"id", "kept_id", "kind"} <= set(dups.column_names) or not dups.num_rows:
        return []
    rows = dups.to_pylist()
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_kind[str(r["kind"])].append(r)
    for kind_rows in by_kind.values():
        kind_rows.sort(key=lambda r: (-(r.get("distance") or 0.0), r["id"]))
    picked: list[dict] = []
    while len(picked) < min(n_pairs, len(rows)):  # round robin over the kinds
        for kind in sorted(by_kind):
            if by_kind[kind] and len(picked) < n_pairs:
                picked.append(by_kind[kind].pop(0))
    thumbs = _thumbs(run, sorted({r[k] for r in picked for k in ("id", "kept_id")}), thumb_size)
    return [
        DuplicatePair(thumbs[r["id"]], thumbs[r["kept_id"]], str(r["kind"]), r.get("similarity"), r.get("distance"))
        for r in picked
    ]


def label_of_points(run: RunDir, point_ids: pa.ChunkedArray) -> tuple[list[str], np.ndarray] | None:
    """(label names, (n_points,) label code per level-1 item, -1 where unknown) from the embeddings'
    carried ``label`` column; None when there is none."""
    if not run.exists(EMBEDDINGS):
        return None
    emb = _read_parquet(run.path(EMBEDDINGS), ["id", "label"])
    if "label" not in emb.column_names or not emb.num_rows:
        return None
    where = pc.index_in(point_ids, value_set=emb.column("id").combine_chunks())
    labels = pc.take(emb.column("label").combine_chunks().cast(pa.string()), where)
    enc = pc.dictionary_encode(labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels)
    codes = np.asarray(pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return [str(v) for v in enc.dictionary.to_pylist()], codes


def label_cluster_counts(codes: np.ndarray, clusters: np.ndarray, n_labels: int, k: int) -> np.ndarray:
    """(n_labels, k) items of each label in each cluster (items without a label left out)."""
    known = codes >= 0
    return np.bincount(codes[known] * k + clusters[known], minlength=n_labels * k).reshape(n_labels, k)


def gather_gallery(
    run: RunDir,
    levels: list[Any],
    selected: np.ndarray | None,
    per_cluster: int,
    max_thumbs: int,
    max_clusters: int,
    thumb_size: int,
    point_labels: tuple[list[str], np.ndarray] | None = None,
) -> tuple[list[GalleryCluster], int]:
    """Every non-empty level-1 cluster, largest first (at most ``max_clusters``; also returns how
    many were left out), each with up to ``per_cluster`` members closest to its centroid as inline
    JPEG thumbnails. The ``max_thumbs`` budget is water-filled over the clusters (small clusters
    shown whole, the others equally), so the page stays a few MB whatever the run's size.
    ``point_labels``: :func:`label_of_points`, to name each cluster's most frequent label."""
    if not levels or max_clusters <= 0:
        return [], 0
    level = levels[0]
    sizes = np.diff(level.offsets)
    non_empty = np.flatnonzero(sizes > 0)
    order = non_empty[np.lexsort((non_empty, -sizes[non_empty]))]  # largest first, ties by id
    shown, hidden = order[:max_clusters], max(0, len(order) - max_clusters)
    caps = np.minimum(sizes[shown], max(per_cluster, 0))
    n_thumbs = water_filling(caps, min(int(caps.sum()), max(max_thumbs, 0)), np.random.default_rng(0))
    point_ids = load_point_ids(run).column("id")
    members = {int(c): level.sorted_clusters[level.offsets[c] : level.offsets[c] + n] for c, n in zip(shown, n_thumbs)}
    ids = {c: [point_ids[int(i)].as_py() for i in idx] for c, idx in members.items()}
    thumbs = _thumbs(run, sorted({i for v in ids.values() for i in v}), thumb_size)
    top: dict[int, tuple[str, float]] = {}
    if point_labels is not None:
        names, codes = point_labels
        counts = label_cluster_counts(codes, np.asarray(level.assignments), len(names), len(sizes))
        best = counts.argmax(axis=0)
        for c in members:
            if counts[:, c].sum():
                top[c] = (names[best[c]], float(counts[best[c], c] / counts[:, c].sum()))
    gallery = [
        GalleryCluster(
            c,
            int(sizes[c]),
            None if selected is None else int(selected[c]),
            [thumbs[i] for i in ids[c]],
            top.get(c),
        )
        for c in members
    ]
    return gallery, hidden


def gather_labels(
    run: RunDir,
    manifest: pa.Table | None,
    levels: list[Any],
    point_labels: tuple[list[str], np.ndarray] | None = None,
    selected: np.ndarray | None = None,
) -> LabelBalance | None:
    """Label shares of the kept input and of the selection (counting multiplicity), and each label's
    level-1 cluster footprint (see :class:`LabelBalance`), when a ``label`` column exists."""
    if manifest is None or "label" not in manifest.column_names or not run.exists(EMBEDDINGS):
        return None
    before = _read_parquet(run.path(EMBEDDINGS), ["label"])
    if "label" not in before.column_names:
        return None
    b = pc.value_counts(before.column("label").combine_chunks())
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in b.to_pylist():
        counts[str(item["values"])][0] = int(item["counts"])
    mult = (
        manifest.column("multiplicity").to_numpy()
        if "multiplicity" in manifest.column_names
        else np.ones(manifest.num_rows)
    )
    for label, m in zip(manifest.column("label").to_pylist(), mult):
        counts[str(label)][1] += int(m)
    balance = LabelBalance({k: (v[0], v[1]) for k, v in sorted(counts.items())})
    if levels and point_labels is not None:
        names, codes = point_labels
        k = len(levels[0].offsets) - 1
        n_lc = label_cluster_counts(codes, np.asarray(levels[0].assignments), len(names), k)
        n_c = n_lc.sum(axis=0)
        footprint = (n_lc[:, n_c > 0] / n_c[n_c > 0]).sum(axis=1)
        balance.footprint = {name: float(f) for name, f in zip(names, footprint)}
        if selected is not None and selected.sum() > 0:
            mix = n_lc[:, n_c > 0] / n_c[n_c > 0]
            predicted = mix @ selected[n_c > 0] / selected[n_c > 0].sum()
            balance.predicted = {name: float(p) for name, p in zip(names, predicted)}
        balance.n_clusters = int((n_c > 0).sum())
    return balance


def gather(run: RunDir, cfg: dict | None = None) -> ReportData:
    """Collect every report section that the run directory has data for."""
    from pipeline.progress import read_log

    opts = dict((cfg or {}).get("report") or {})
    run_json = run.read_json(RUN_JSON, default={}) or {}
    config = cfg if cfg and set(cfg) - {"report"} else run_json.get("config", {}) or {}
    data = ReportData(root=run.root, config=config, timings=dict(run_json.get("timings") or {}))
    data.counts, data.reject_reasons = gather_counts(run, run_json)
    sample = (run_json.get("counts") or {}).get("sample") or {}
    keys = ("strategy", "objective", "pick_level", "allocation_power", "split_level", "target_size")
    data.selection = {k: sample[k] for k in keys if k in sample}
    data.levels, levels, manifest = gather_levels(run)
    thumb_size = int(opts.get("thumb_size", 96))
    point_labels = label_of_points(run, load_point_ids(run).column("id")) if levels else None
    data.gallery, data.gallery_hidden = gather_gallery(
        run,
        levels,
        data.levels[0].after if data.levels else None,
        int(opts.get("thumbs_per_cluster", 24)),
        int(opts.get("max_thumbs", 1200)),
        int(opts.get("max_clusters", 500)),
        thumb_size,
        point_labels,
    )
    data.duplicate_pairs = gather_duplicate_pairs(run, int(opts.get("duplicate_pairs", 12)), thumb_size)
    data.copy_detection = ((run_json.get("counts") or {}).get("dedup") or {}).get("copies")
    data.labels = gather_labels(run, manifest, levels, point_labels, data.levels[0].after if data.levels else None)
    if run.exists(ACTIVE_ROUNDS):
        data.active = _read_parquet(run.path(ACTIVE_ROUNDS))
    data.progress = read_log(run, last=int(opts.get("progress_lines", 30)))
    return data
