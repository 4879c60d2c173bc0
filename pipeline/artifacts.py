"""Every artifact of a run directory, named once, with its reader and writer.

A step asks this module for paths (``run.path(MANIFEST)``, ``run.path(ACTIVE_LABELS)``,
:func:`cluster_step_dir`) and for readers of plain tables (:func:`duplicate_ids`); no other module
spells a path inside ``run_dir``. It knows no algorithm type: what an algorithm's outputs hold is
read and written by that algorithm's package (k-means: :mod:`pipeline.kmeans.levels`). Each
artifact names the step that writes it, so a step that reads it can declare it as an input (``run.step(..., inputs=[EMBEDDINGS])``) and inherit its fingerprint.
"""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.rundir import EXTERNAL_SOURCES, Artifact, RunDir, input_fingerprint  # noqa: F401 - re-exported

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
def cluster_step_dir(level: int, step: int) -> str:
    """The folder of one k-means step's arrays (``clusters/level_<l>/step_<s>``)."""
    return CLUSTERS / f"level_{level}/step_{step}"


def cluster_points_part(run: RunDir, shard: int) -> str:
    """Where shard ``shard`` writes its ``index, id`` table (``clusters/points/part-XXXXX.parquet``)."""
    return run.path(CLUSTER_POINTS, f"part-{shard:05d}.parquet")


def clear_cluster_points(run: RunDir) -> None:
    if run.exists(CLUSTER_POINTS):
        run.fs.rm(run.local(CLUSTER_POINTS), recursive=True)


def cluster_step_parts(run: RunDir, level: int, step: int) -> str:
    """Scratch folder (URI) where the k-means shards write their parts of a step before the merge."""
    return run.path(TMP, f"cluster_parts/level_{level}/step_{step}")
