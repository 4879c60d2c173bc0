"""Reading and writing the k-means results of a run directory (``clusters/``).

The layout (where a step's folder is, where the shards put their parts) is
:mod:`pipeline.artifacts`'; this module knows what lies there: one ``<name>.npy`` per array of a
:class:`LevelResult` (one level's clustering in CSR form, :func:`sort_clusters`) in
``clusters/level_<l>/step_<s>/``, ``clusters/clusters.json`` (levels, final step of each, counts)
and ``clusters/points/`` (``index``, ``id`` of every level-1 item). Light: numpy and pyarrow only,
so a reader of the clusters (sampling, the report) does not import FAISS.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import CLUSTER_POINTS, CLUSTERS_JSON, cluster_step_dir
from pipeline.io.tables import list_parquet_files
from pipeline.rundir import RunDir

# One .npy file per field of LevelResult, in field order.
CLUSTER_ARRAYS = ("centroids", "assignments", "distances", "offsets", "sorted_clusters", "sorted_distances")


@dataclass
class LevelResult:
    """One level's clustering of its items (points at level 1, centroids of level l-1 above).

    ``offsets`` (k+1,), ``sorted_clusters`` (n,) item indices sorted by (cluster, distance),
    ``sorted_distances`` (n,), ``assignments`` (n,) and ``distances`` (n,) in item order.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    distances: np.ndarray
    offsets: np.ndarray
    sorted_clusters: np.ndarray
    sorted_distances: np.ndarray

    @classmethod
    def from_assignments(cls, centroids: np.ndarray, assignments: np.ndarray, distances: np.ndarray) -> LevelResult:
        offsets, members, member_dist = sort_clusters(assignments, distances, len(centroids))
        return cls(centroids, assignments, distances, offsets, members, member_dist)


def sort_clusters(assignments: np.ndarray, distances: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR of clusters sorted by distance: ``members[offsets[c]:offsets[c+1]]`` is cluster c.

    Returns (offsets (k+1,) int64, members (n,) int64 item indices, member distances (n,)).
    Ties in distance are broken by the smaller item index.
    """
    assignments = np.asarray(assignments, dtype=np.int64)
    order = np.lexsort((np.arange(len(assignments)), distances, assignments))
    offsets = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(assignments, minlength=k), out=offsets[1:])
    return offsets, order.astype(np.int64), np.asarray(distances)[order]


def save_step(run: RunDir, level: int, step: int, result: LevelResult) -> None:
    """Write one k-means step's arrays atomically (staging folder renamed on success)."""

    def write(files: dict[str, BinaryIO]) -> None:
        for name, fh in files.items():
            np.save(fh, getattr(result, name))

    write_step(run, level, step, write)


def write_step(run: RunDir, level: int, step: int, write: Callable[[dict[str, BinaryIO]], None]) -> None:
    """Write one step's ``<name>.npy`` files: ``write`` gets an open file per name of
    :data:`CLUSTER_ARRAYS` (it may stream into them); a staging folder is renamed into place on success."""
    with run.staging(cluster_step_dir(level, step)) as tmp:
        fs, root = fsspec.core.url_to_fs(tmp)
        fs.makedirs(root, exist_ok=True)
        with contextlib.ExitStack() as stack:
            write({name: stack.enter_context(fs.open(f"{root}/{name}.npy", "wb")) for name in CLUSTER_ARRAYS})


def load_step(run: RunDir, level: int, step: int) -> LevelResult:
    """The :class:`LevelResult` of one finished step."""
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
    tables = []
    for f in list_parquet_files(run.path(CLUSTER_POINTS)):
        with fsspec.open(f, "rb") as fh:
            tables.append(pq.read_table(fh))
    return pa.concat_tables(tables).sort_by("index")
