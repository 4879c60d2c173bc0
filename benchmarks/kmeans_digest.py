"""Digests of the k-means area's outputs on fixed inputs, to show a refactor changed no result.

Run it in two checkouts (e.g. ``git archive <base> | tar -x -C /tmp/base``) and diff the output;
identical digests mean bit-identical arrays. Inputs: scikit-learn's bundled 8x8 grey digits (1,797
x 64) and seeded Gaussian blobs (1,500 x 32). Covered: single-process ``kmeans`` (l2 / cosine x
kmeans++ / random / auto), k-means++ seeding, ``hierarchical_kmeans``, the active-learning
diversity clustering, the per-cluster coreset, and the ``cluster`` step on a run directory read
back (whichever module holds ``load_levels`` in that checkout).

    PYTHONPATH=. .venv/bin/python -m benchmarks.kmeans_digest > head.txt
    cd /tmp/base && PYTHONPATH=. /path/to/.venv/bin/python -m benchmarks.kmeans_digest > base.txt
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile

import numpy as np
import pyarrow as pa


def digest(*arrays: np.ndarray) -> str:
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


def inputs() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    centres = np.repeat(rng.normal(scale=4, size=(15, 32)), 100, axis=0)
    return {
        "digits": load_digits().data.astype(np.float32),
        "blobs": (rng.normal(size=(1500, 32)) + centres).astype(np.float32),
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from pipeline.kmeans.algorithm import kmeans, kmeans_plus_plus_init
    from pipeline.kmeans.hierarchical import hierarchical_kmeans

    data = inputs()
    for name, x in data.items():
        for metric in ("l2", "cosine"):
            for init in ("kmeans++", "random", "auto"):
                print(name, "kmeans", metric, init, digest(*kmeans(x.copy(), 20, 10, init=init, metric=metric, seed=3)))
        print(name, "kmeans++ init", digest(kmeans_plus_plus_init(x.copy(), 12, 1, metric="cosine")))
        cfg = {"n_clusters": [30, 6], "n_iters": [8, 8], "n_resampling_steps": [2, 1], "sample_size": [5, 3], "seed": 1}
        levels = hierarchical_kmeans(x.copy(), cfg)
        print(name, "hierarchical_kmeans", digest(*[a for lv in levels for a in vars(lv).values()]))

    from pipeline.active.diversity import clustering
    from pipeline.config import with_defaults
    from pipeline.coreset.run import select_coreset

    digits = data["digits"]
    unit = digits / np.linalg.norm(digits, axis=1, keepdims=True).clip(1e-9)
    u = np.random.default_rng(0).random(len(digits))
    print("active diversity clustering", digest(clustering(unit, u, 50, n_clusters=8, seed=2, n_iters=10)))
    idx, radius, assign, _ = select_coreset(
        digits.copy(), 60, with_defaults("coreset/default", {"method": "per_cluster"})
    )
    print("coreset per_cluster", digest(np.asarray(idx), np.asarray(assign)), round(float(radius), 6))

    from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
    from pipeline.kmeans.run import run_cluster
    from pipeline.rundir import RunDir

    try:
        from pipeline.kmeans.levels import load_levels, load_point_ids
    except ImportError:  # a checkout from before pipeline/kmeans/levels.py
        from pipeline.artifacts import load_levels, load_point_ids
    run = RunDir(tempfile.mkdtemp(prefix="kmeans-digest-"))
    ids = pa.array([f"d{i:05d}" for i in range(len(digits))])
    table = pa.table({"id": ids, "embedding": embeddings_to_arrow(digits)})
    write_parquet_atomic(table, run.path("embeddings", "part-00000.parquet"))
    step = {"in_process": True, "n_clusters": [40, 8], "n_iters": [6, 6], "n_resampling_steps": [2, 1]}
    run_cluster(run, {**step, "sample_size": [6, 3], "chunk_mb": 0.05}, seed=0)
    _, levels = load_levels(run)
    points = load_point_ids(run).column("id").to_pylist()
    print("cluster step", digest(*[a for lv in levels for a in vars(lv).values()]), points[:2], len(points))


if __name__ == "__main__":
    main()
