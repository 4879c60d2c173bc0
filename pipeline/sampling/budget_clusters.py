"""Budget-sized clusters: k-means with k = the number of picks (TypiClust, Hacohen et al., ICML 2022).

TypiClust takes the most typical point of each of B clusters for a budget of B; the hierarchy's
levels are B-sized only by chance, so for small budgets the sample step clusters the pool once more
with k = B: spherical k-means (``pipeline.kmeans.kmeans``, greedy k-means++ init, so small, far
concepts get a centre) trained on a seeded uniform sample of at most ``max_points_per_centroid * B``
rows, then one nearest-centroid pass over all N rows (FAISS inner product)::

    cost = O(min(N, 256 B) * B * D * (n_iters + 2 + ln B) + N * B * D)

linear in N for a bounded B (``sample.auto.max_budget_clusters`` bounds it on the default path).
"""

from __future__ import annotations

import numpy as np


def budget_clusters(
    x: np.ndarray, k: int, seed: int, *, n_iters: int = 20, max_points_per_centroid: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets (k+1,), items (N,)) of a spherical k-means of ``x`` (N, D) into ``k`` clusters,
    members sorted by cosine distance to their centroid (closest first; empty clusters allowed)."""
    import faiss

    from pipeline.kmeans.algorithm import kmeans

    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"budget clusters need 1 <= k <= {n} rows, got k={k}")
    rng = np.random.default_rng(seed)
    xn = np.ascontiguousarray(x, dtype=np.float32)
    xn = xn / np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
    m = min(n, max_points_per_centroid * k)
    train = xn if m == n else xn[np.sort(rng.choice(n, m, replace=False))]
    centroids, _, _ = kmeans(train, k, n_iters, init="kmeans++", metric="cosine", seed=rng)
    index = faiss.IndexFlatIP(xn.shape[1])
    centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sim, assign = index.search(xn, 1)
    assign, dist = assign[:, 0].astype(np.int64), 1.0 - sim[:, 0]
    items = np.lexsort((np.arange(n), dist, assign))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(assign, minlength=k))])
    return offsets, items
