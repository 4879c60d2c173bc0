"""Every artifact of a run directory, named once, with its reader and writer.

A step asks this module for paths (``run.path(MANIFEST)``, ``run.path(ACTIVE_LABELS)``) and for
readers (:func:`load_levels`, :func:`duplicate_ids`); no other module spells a path inside
``run_dir``. Each artifact names the step that writes it, so a step that reads it can declare it
as an input (``run.step(..., inputs=[EMBEDDINGS])``) and inherit its fingerprint.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.rundir import EXTERNAL_SOURCES, Artifact, RunDir, input_fingerprint  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from pipeline.kmeans.hierarchical import LevelResult


RUN_JSON = Artifact("run.json", "", "", "resolved config, seed, versions, counts, timings per step")
PROGRESS_LOG = Artifact("progress.log", "", "", "progress lines of every long step")
TMP = Artifact("_tmp", "", "", "scratch space of a running step")

PRETRAIN = Artifact("pretrain", "pretrain", "pretrain", "Ray Train checkpoints (ray/), metrics.json")
PRETRAIN_CHECKPOINT = Artifact("pretrain/checkpoint", "pretrain", "pretrain", "exported SSL backbone")
PRETRAIN_RAY = Artifact("pretrain/ray", "pretrain", "pretrain", "Ray Train run folder (epoch checkpoints)")
PRETRAIN_METRICS = Artifact("pretrain/metrics.json", "pretrain", "pretrain", "loss and rate per epoch")
EMBEDDINGS = Artifact(
    "embeddings", "embed", "embed", "part-*.parquet: id, embedding, uri, carried columns, copy signatures"
)
REJECTS = Artifact("rejects.parquet", "embed", "embed", "id, uri, reason of every input that was not embedded")
DEDUP = Artifact("dedup", "dedup", "dedup", "duplicates.parquet and kept.parquet")
DUPLICATES = Artifact("dedup/duplicates.parquet", "dedup", "dedup", "id, kept_id, similarity, kind")
KEPT = Artifact("dedup/kept.parquet", "dedup", "dedup", "id of every row kept by dedup")
CLUSTERS = Artifact("clusters", "cluster", "cluster", "hierarchical k-means levels (CSR arrays per step)")
CLUSTERS_JSON = Artifact("clusters/clusters.json", "cluster", "cluster", "levels, final step of each, counts")
CLUSTER_POINTS = Artifact("clusters/points", "cluster", "cluster", "index -> id of every level-1 item")
MANIFEST = Artifact("manifest.parquet", "sample", "sample", "the balanced selection")
CORESET = Artifact("coreset/manifest.parquet", "coreset", "coreset", "the k-center selection")
INDEX = Artifact("index", "index", "index", "FAISS index, ids and metadata")
INDEX_CONFIG = Artifact("index/config.json", "index", "index", "how the index was built")
LABELS = Artifact("labels", "label_export", "label", "labels.sqlite (live), labels.parquet, imagefolder/")
LABELS_DB = Artifact("labels/labels.sqlite", "label_queue", "label", "the labeler's store")
LABEL_FILES = {
    "labels": "labels.parquet",
    "events": "label_events.parquet",
    "imagefolder": "imagefolder",
}  # in labels/ or export.dir
ACTIVE = Artifact("active", "active", "active", "labels, rounds, head, summary, imagefolder")
ACTIVE_LABELS = Artifact("active/labels.parquet", "active", "active", "human labels and model positives")
ACTIVE_ROUNDS = Artifact("active/rounds.parquet", "active", "active", "one row per round")
ACTIVE_HEAD = Artifact("active/head.npz", "active", "active", "final head weights")
ACTIVE_SUMMARY = Artifact("active/summary.json", "active", "active", "counts and metrics")
ACTIVE_IMAGEFOLDER = Artifact("active/imagefolder", "active", "active", "<label>/<file> export")
ACTIVE_STATE = Artifact("active/state", "active", "active", "loop checkpoint (resume)")
EVALUATE_ACTIVE_RUNS = Artifact(
    "evaluate_active/runs.parquet", "evaluate_active", "evaluate-active", "one row per class and seed"
)
EVALUATE_ACTIVE_SUMMARY = Artifact("evaluate_active/summary.json", "evaluate_active", "evaluate-active", "averages")
REPORT = Artifact("report.html", "report", "curate", "self-contained HTML report")

ALL: tuple[Artifact, ...] = tuple(v for v in globals().values() if isinstance(v, Artifact))
# Embeddings made elsewhere (no embed step in this run) are an input like any other: their
# fingerprint is their file listing. Every later step works on them unchanged.
EXTERNAL_SOURCES[EMBEDDINGS.step] = EMBEDDINGS.name
EXTERNAL_SOURCES[MANIFEST.step] = MANIFEST.name  # a manifest made elsewhere can be labeled
EXTERNAL_SOURCES[DUPLICATES.step] = DUPLICATES.name  # so can a duplicate list from another tool
DOWNLOAD_COMPOSITE = "composite"  # step name of the satellite composite (its outputs live outside run_dir)


# ---- embeddings and dedup ----------------------------------------------------------------------
# Columns of embeddings/ holding each image's copy signatures, taken by the embed (or import) step
# from the pixels it decoded and read back by dedup (types and meaning: pipeline.dedup.hashing).
# The pixel arrays among them are dedup's, not data about an item: readers of the embeddings'
# columns (manifests, exports, index metadata, read_run_embeddings) leave them out.
PIXEL_HASH, GREY_GRID, D4_PHASH, PIXEL_COUNT = "pixel_hash", "grey_grid", "d4_phash", "pixel_count"
SIGNATURE_COLUMNS = (PIXEL_HASH, GREY_GRID, D4_PHASH, PIXEL_COUNT)
SIGNATURE_ARRAYS = (GREY_GRID, D4_PHASH, PIXEL_COUNT)


def carried_columns(names: list[str]) -> list[str]:
    """The columns of an embeddings table that describe its items: all but the vector and the
    signature arrays (``pixel_hash``, a short string, travels as it always did)."""
    from pipeline.io.tables import EMBEDDING

    return [c for c in names if c != EMBEDDING and c not in SIGNATURE_ARRAYS]


def embedding_files(run: RunDir) -> list[str]:
    from pipeline.io.tables import list_parquet_files

    return list_parquet_files(run.path(EMBEDDINGS))


def _embedding_columns(run: RunDir) -> list[str]:
    files = embedding_files(run)
    if not files:
        return []
    with fsspec.open(files[0], "rb") as fh:
        return pq.read_schema(fh).names


def read_run_embeddings(run: RunDir, columns: list[str] | None = None) -> tuple[pa.Table, np.ndarray]:
    """(table of ``columns``, default :func:`carried_columns`, (N, D) float32) of the run's embeddings."""
    from pipeline.io.tables import read_embeddings

    if columns is None:
        columns = carried_columns(_embedding_columns(run)) or None
    return read_embeddings(run.path(EMBEDDINGS), columns)


def read_run_signatures(run: RunDir) -> pa.Table | None:
    """``id`` and the :data:`SIGNATURE_COLUMNS` of the run's embeddings, rows in
    :func:`read_run_embeddings` order; None when the embeddings lack any of them."""
    from pipeline.io.tables import list_parquet_files

    if not set(SIGNATURE_COLUMNS) <= set(_embedding_columns(run)):
        return None
    tables = []
    for f in list_parquet_files(run.path(EMBEDDINGS)):
        with fsspec.open(f, "rb") as fh:
            tables.append(pq.read_table(fh, columns=["id", *SIGNATURE_COLUMNS]))
    return pa.concat_tables(tables)


def duplicate_ids(run: RunDir) -> pa.Array:
    """Ids that dedup removed (empty when the run has no current dedup output)."""
    if not run.is_current(DUPLICATES):
        return pa.array([], pa.string())
    with fsspec.open(run.path(DUPLICATES), "rb") as fh:
        return pq.read_table(fh, columns=["id"]).column("id").combine_chunks()


def write_dedup(run: RunDir, duplicates: pa.Table, kept: pa.Table) -> None:
    """``dedup/duplicates.parquet`` and ``dedup/kept.parquet``, renamed into place together."""
    with run.staging(DEDUP) as tmp:
        fs, root = fsspec.core.url_to_fs(tmp)
        fs.makedirs(root, exist_ok=True)
        for name, table in ((os.path.basename(DUPLICATES.name), duplicates), (os.path.basename(KEPT.name), kept)):
            with fs.open(f"{root}/{name}", "wb") as fh:
                pq.write_table(table, fh)


# ---- clusters ----------------------------------------------------------------------------------
CLUSTER_ARRAYS = ("centroids", "assignments", "distances", "offsets", "sorted_clusters", "sorted_distances")


def cluster_step_dir(level: int, step: int) -> str:
    return CLUSTERS / f"level_{level}/step_{step}"


def cluster_points_part(run: RunDir, shard: int) -> str:
    """Where shard ``shard`` writes its ``index, id`` table (``clusters/points/part-XXXXX.parquet``)."""
    return run.path(CLUSTER_POINTS, f"part-{shard:05d}.parquet")


def clear_cluster_points(run: RunDir) -> None:
    if run.exists(CLUSTER_POINTS):
        run.fs.rm(run.local(CLUSTER_POINTS), recursive=True)


def save_step(run: RunDir, level: int, step: int, result: LevelResult) -> None:
    """Write one k-means step's arrays atomically (staging folder renamed on success)."""

    def write(files: dict[str, BinaryIO]) -> None:
        for name, fh in files.items():
            np.save(fh, getattr(result, name))

    write_step(run, level, step, write)


def write_step(run: RunDir, level: int, step: int, write: Callable[[dict[str, BinaryIO]], None]) -> None:
    """Write one step's ``<name>.npy`` files: ``write`` gets an open file per name of
    ``CLUSTER_ARRAYS`` (it may stream into them); a staging folder is renamed into place on success."""
    with run.staging(cluster_step_dir(level, step)) as tmp:
        fs, root = fsspec.core.url_to_fs(tmp)
        fs.makedirs(root, exist_ok=True)
        with contextlib.ExitStack() as stack:
            write({name: stack.enter_context(fs.open(f"{root}/{name}.npy", "wb")) for name in CLUSTER_ARRAYS})


def cluster_step_parts(run: RunDir, level: int, step: int) -> str:
    """Scratch folder (URI) where the k-means shards write their parts of a step before the merge."""
    return run.path(TMP, f"cluster_parts/level_{level}/step_{step}")


def load_step(run: RunDir, level: int, step: int) -> LevelResult:
    from pipeline.kmeans.hierarchical import LevelResult

    arrays = {}
    for name in CLUSTER_ARRAYS:
        with run.fs.open(run.local(cluster_step_dir(level, step), f"{name}.npy"), "rb") as fh:
            arrays[name] = np.load(fh)
    return LevelResult(**arrays)


def load_step_centroids(run: RunDir, level: int, step: int) -> tuple[np.ndarray, int]:
    """(centroids (k, D), number of items clustered) of one step, without reading the N-length arrays."""
    folder = cluster_step_dir(level, step)
    with run.fs.open(run.local(folder, "centroids.npy"), "rb") as fh:
        centroids = np.load(fh)
    with run.fs.open(run.local(folder, "assignments.npy"), "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(fh)  # the header only
    return centroids, int(shape[0])


def write_clusters_json(run: RunDir, summary: dict[str, Any]) -> None:
    run.write_json(CLUSTERS_JSON, summary)


def load_levels(run: RunDir) -> tuple[dict, list[LevelResult]]:
    """(``clusters.json`` content, final :class:`LevelResult` of every level) of a finished run."""
    with run.fs.open(run.local(CLUSTERS_JSON), "r") as fh:
        meta = json.load(fh)
    return meta, [load_step(run, lv["level"], lv["final_step"]) for lv in meta["levels"]]


def load_point_ids(run: RunDir) -> pa.Table:
    """``index``, ``id`` of every level-1 item, sorted by index."""
    from pipeline.io.tables import list_parquet_files

    tables = []
    for f in list_parquet_files(run.path(CLUSTER_POINTS)):
        with fsspec.open(f, "rb") as fh:
            tables.append(pq.read_table(fh))
    return pa.concat_tables(tables).sort_by("index")
