"""Which images share a grid page: the open queue ids most like the page's first one.

A grid page is labeled at a glance only when its images look alike. ``Neighbours`` ranks a
window of open queue ids by cosine similarity to the page's anchor,
``sim(a, c) = <x_a, x_c> / (|x_a| |x_c|)``, from the run's embeddings (exact inner products on
L2-normalised rows, the FAISS ``IndexFlatIP`` metric, over at most ``window`` candidates per
page, so a page costs ``window x D`` multiply-adds). ``Clusters`` puts the anchor's cluster first
(the run's finest k-means level) when a run has clusters but the server is not given embeddings.
Ids either does not know keep queue order, after the known ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.io.tables import read_embeddings

log = logging.getLogger(__name__)

Ranker = Callable[[str, list[str]], list[str]]


def ranker_for_run(run_dir: str) -> Ranker | None:
    """``Neighbours`` from the run's embeddings, else ``Clusters`` from its level-1 k-means, else None."""
    from pipeline.artifacts import CLUSTERS_JSON, EMBEDDINGS
    from pipeline.kmeans.levels import load_levels, load_point_ids
    from pipeline.rundir import RunDir

    run = RunDir(run_dir)
    if run.has(EMBEDDINGS):
        return Neighbours.from_embeddings(run.path(EMBEDDINGS))
    if run.exists(CLUSTERS_JSON):
        _, levels = load_levels(run)
        return Clusters(load_point_ids(run).column("id").to_pylist(), levels[0].assignments)
    log.warning("%s has no embeddings or clusters: grid pages follow queue order", run_dir)
    return None


class Neighbours:
    """Rank candidates by cosine similarity to an anchor; ``vectors`` is (N, D), row k for ``ids[k]``."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray):
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(x) != len(ids):
            raise ValueError(f"need one vector per id: {len(ids)} ids, vectors of shape {x.shape}")
        self.x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # N x D x 4 bytes in the server
        self.row = {str(i): k for k, i in enumerate(ids)}

    @classmethod
    def from_embeddings(cls, path: str) -> Neighbours:
        """From an embeddings table (``<run_dir>/embeddings``: ``id`` + ``embedding`` columns)."""
        table, x = read_embeddings(path, ["id"])
        return cls([str(i) for i in table.column("id").to_pylist()], x)

    def __call__(self, anchor: str, candidates: list[str]) -> list[str]:
        a = self.row.get(anchor)
        if a is None or not candidates:
            return list(candidates)
        rows = np.fromiter((self.row.get(c, -1) for c in candidates), dtype=np.int64, count=len(candidates))
        known = rows >= 0
        sims = np.full(len(candidates), -np.inf, dtype=np.float32)
        # einsum, not BLAS: a threaded matvec this small is 10x slower on a busy machine (it runs in the write lock)
        sims[known] = np.einsum("ij,j->i", self.x[rows[known]], self.x[a])
        return [candidates[i] for i in np.argsort(-sims, kind="stable")]


class Clusters:
    """Candidates in the anchor's cluster first (queue order inside each part)."""

    def __init__(self, ids: Sequence[str], assignments: Sequence[int]):
        if len(ids) != len(assignments):
            raise ValueError(f"need one cluster per id: {len(ids)} ids, {len(assignments)} assignments")
        self.cluster = {str(i): int(c) for i, c in zip(ids, assignments)}

    def __call__(self, anchor: str, candidates: list[str]) -> list[str]:
        mine = self.cluster.get(anchor)
        if mine is None:
            return list(candidates)
        same = [c for c in candidates if self.cluster.get(c) == mine]
        return same + [c for c in candidates if self.cluster.get(c) != mine]
