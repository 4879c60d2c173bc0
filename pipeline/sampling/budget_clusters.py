"""Budget-sized clusters: k-means with k = the number of picks (TypiClust, Hacohen et al., ICML 2022).

TypiClust takes the most typical point of each of B clusters for a budget of B; the hierarchy's
levels are B-sized only by chance, so for small budgets the sample step clusters the pool once more
with k = B: spherical k-means (``pipeline.kmeans.kmeans``, greedy k-means++ init, so small, far
concepts get a centre) trained on a seeded uniform sample of at most ``max_points_per_centroid * B``
rows, then one nearest-centroid pass over all N rows (FAISS inner product)::

    cost = O(min(N, 256 B) * B * D * (n_iters + 2 + ln B) + N * B * D)

linear in N for a bounded B (``sample.budget_kmeans.max_whole_pool`` bounds it on the default path).

:func:`group_budget_clusters` is the balance-keeping variant (``sample.budget_split``): a k-means with
k = b_c inside every cluster c of one hierarchy level at once (b_c: its water-filled budget), cost
O(sum_c n_c b_c D) per iteration, i.e. N (B / k_level) D: linear in N at a fixed budget per cluster.
"""

from __future__ import annotations

import numpy as np


def budget_clusters(
    x: np.ndarray, k: int, seed: int, *, n_iters: int, max_points_per_centroid: int
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


def group_budget_clusters(
    x: np.ndarray, offsets: np.ndarray, items: np.ndarray, k: np.ndarray, seed: int, *, n_iters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical k-means with ``k[g]`` centres inside every group g of a CSR, all groups in one pass.

    Args:
        x: (N, D) embeddings by item id.
        offsets / items: (G+1,) / (n,) CSR of the groups (e.g. the clusters of one hierarchy level).
        k: (G,) centres per group, ``0 <= k[g] <= group size`` (0: the group is left out).
        seed: k-means++ draws.
        n_iters: Lloyd iterations (fewer when no assignment changes).

    Returns:
        ``sub_offsets`` (K+1,), ``sub_items`` (m,) CSR of the K = sum(k) sub-clusters (members sorted by
        cosine distance to their centroid; empty ones allowed) and ``sub_group`` (K,) the group of each.

    Init: k-means++ (D^2 draws), round t drawing the t-th centre of every group with k[g] > t; Lloyd:
    assign each row to the nearest centre *of its group* (rows in blocks against the centres of the
    groups the block touches), centre = normalised mean. Cost O(sum_g n_g k_g D (n_iters + 1)).
    """
    import torch

    rng = np.random.default_rng(seed)
    sizes, k = np.diff(offsets), np.asarray(k, dtype=np.int64)
    if (k < 0).any() or (k > sizes).any():
        raise ValueError("group budget clusters need 0 <= k <= group size")
    keep = np.repeat(k > 0, sizes)
    group = np.repeat(np.arange(len(sizes)), sizes)[keep]  # group of every kept row; rows stay grouped
    rows = items[keep]
    n, n_groups = len(rows), len(sizes)
    # float64 and similarities rounded to 1e-9: the same picks whatever the thread count (a GEMM's rounding
    # depends on its blocking, and near-duplicate rows would otherwise swap places)
    xs = torch.as_tensor(np.ascontiguousarray(x[rows], dtype=np.float64))
    xs = xs / xs.norm(dim=1, keepdim=True).clamp(min=1e-12)
    g_t = torch.as_tensor(group)
    row_off = np.concatenate([[0], np.cumsum(np.where(k > 0, sizes, 0))])
    c_off = np.concatenate([[0], np.cumsum(k)])  # centres of group g: c_off[g]:c_off[g+1]
    centres = torch.zeros((int(c_off[-1]), xs.shape[1]), dtype=torch.float64)
    mind = torch.full((n,), float("inf"), dtype=torch.float64)
    for t in range(int(k.max(initial=0))):  # k-means++: the t-th centre of every group with k > t
        live = k > t
        w = torch.where(torch.as_tensor(live)[g_t], mind.clamp(max=4.0) if t else torch.ones(n, dtype=torch.float64), 0)
        cum = torch.cumsum(w, 0)
        lo, hi = row_off[:-1][live], row_off[1:][live]
        before = torch.where(torch.as_tensor(lo) > 0, cum[torch.as_tensor(np.maximum(lo - 1, 0))], 0.0)
        total = cum[torch.as_tensor(hi - 1)] - before
        u = torch.as_tensor(rng.random(int(live.sum())))
        pick = torch.searchsorted(cum, before + u * total, right=True).numpy()
        pick = np.clip(pick, lo, hi - 1)
        centres[torch.as_tensor(c_off[:-1][live] + t)] = xs[torch.as_tensor(pick)]
        newest = torch.as_tensor(c_off[group] + np.minimum(t, k[group] - 1))  # a finished group: masked below
        d = torch.round(1.0 - (xs * centres[newest]).sum(1), decimals=9)
        mind = torch.where(torch.as_tensor(live)[g_t], torch.minimum(mind, 2.0 * d.clamp(min=0.0)), mind)
        mind[torch.as_tensor(pick)] = 0.0
    assign = torch.full((n,), -1, dtype=torch.int64)
    for it in range(n_iters + 1):
        new, sim = _nearest_centre_in_group(xs, centres, group, c_off)
        if it == n_iters or torch.equal(new, assign):
            assign = new
            break
        assign = new
        sums = torch.zeros_like(centres).index_add_(0, assign, xs)
        norm = sums.norm(dim=1, keepdim=True)
        centres = torch.where(norm > 0, sums / norm.clamp(min=1e-12), centres)  # an emptied centre stays
    a, dist = assign.numpy(), 1.0 - sim.numpy()
    order = np.lexsort((np.arange(n), dist, a))
    sub_offsets = np.concatenate([[0], np.cumsum(np.bincount(a, minlength=len(centres)))])
    return sub_offsets, rows[order], np.repeat(np.arange(n_groups), k)


def _nearest_centre_in_group(xs, centres, group: np.ndarray, c_off: np.ndarray, block_rows: int = 256) -> tuple:
    """(n,) index of the most similar centre among the row's group's centres, and that cosine similarity."""
    import torch

    n = len(xs)
    best, best_sim = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=xs.dtype)
    centre_group = torch.as_tensor(np.repeat(np.arange(len(c_off) - 1), np.diff(c_off)))
    g_t = torch.as_tensor(group)
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        s, e = int(c_off[group[a]]), int(c_off[group[b - 1] + 1])
        sim = torch.round(xs[a:b] @ centres[s:e].T, decimals=9)
        sim = sim.masked_fill(g_t[a:b, None] != centre_group[None, s:e], -torch.inf)
        idx = sim.argmax(1)  # ties: the first centre
        val = sim.gather(1, idx[:, None])[:, 0]
        best[a:b], best_sim[a:b] = idx + s, val
    return best, best_sim
