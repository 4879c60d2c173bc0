"""Coreset benchmark: covering radius / class coverage on AID, and exact vs stratified at 1M x 128.

    .venv/bin/python -m benchmarks.coreset aid      # 10% coresets of AID embeddings vs 10% random
    .venv/bin/python -m benchmarks.coreset scale    # 100,000 of 1,000,000 x 128: exact vs stratified
    .venv/bin/python -m benchmarks.coreset scale --n 100000 --k 10000 --exact-picks 0   # full exact run

The exact greedy's cost per pick is constant (one N x D matrix-vector product), so at 1M it is
timed over ``--exact-picks`` picks and extrapolated linearly to k picks; ``--exact-picks 0`` runs it
fully. Results are printed as JSON and saved under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks.common import CACHE, machine
from pipeline.coreset.kcenter import covering_radius, k_center_greedy, stratified_k_center
from pipeline.coreset.percluster import per_cluster_k_center

# The settings the BENCHMARKS.md numbers were measured with (conf/coreset/default.yaml's at the time, on CPU).
L2 = {"metric": "l2", "device": "cpu"}
STRATIFIED = {"sample_size": 1024, "resample_every": 256, "random_fraction": 0.5, "bound_centers": 4096, **L2}


def label_stats(labels: np.ndarray, idx: np.ndarray) -> dict:
    classes, counts = np.unique(labels[idx], return_counts=True)
    p = counts / counts.sum()
    all_classes, all_counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(classes, counts))
    share = np.array([per_class.get(c, 0) / n for c, n in zip(all_classes, all_counts)])
    return {
        "classes": int(len(classes)),
        "of": int(len(all_classes)),
        "entropy_bits": round(float(-(p * np.log2(p)).sum()), 4),
        "min_class_share": round(float(share.min()), 4),
        "max_class_share": round(float(share.max()), 4),
    }


def bench_aid(seeds: int = 5) -> dict:
    from benchmarks.common import aid_embeddings
    from pipeline.kmeans.algorithm import kmeans

    table, x = aid_embeddings()
    labels = np.asarray(table.column("label").to_pylist())
    n, k = len(x), len(x) // 10
    out: dict = {"n": n, "k": k, "dim": int(x.shape[1]), "metric": "l2 on L2-normalised embeddings"}
    t = time.perf_counter()
    idx, r = k_center_greedy(x, k, **L2)
    out["exact"] = {"radius": round(r, 4), "seconds": round(time.perf_counter() - t, 1), **label_stats(labels, idx)}
    t = time.perf_counter()
    idx, _ = stratified_k_center(x, k, seed=0, radius_sample=16384, **STRATIFIED)
    out["stratified"] = {
        "radius": round(covering_radius(x, idx, **L2), 4),
        "seconds": round(time.perf_counter() - t, 1),
        **label_stats(labels, idx),
    }
    t = time.perf_counter()
    _, assignments, _ = kmeans(np.array(x), 30, 20, init="kmeans++", metric="l2", seed=0)
    idx, bound, _ = per_cluster_k_center(x, assignments, k, allocation="balanced", seed=0, use_ray=False, **L2)
    out["per_cluster_30"] = {
        "radius": round(covering_radius(x, idx, **L2), 4),
        "radius_bound": round(bound, 4),
        "seconds": round(time.perf_counter() - t, 1),
        **label_stats(labels, idx),
    }
    rand = []
    for s in range(seeds):
        idx = np.random.default_rng(s).choice(n, k, replace=False)
        rand.append({"radius": covering_radius(x, idx, **L2), **label_stats(labels, idx)})
    out["random"] = {key: round(float(np.mean([r[key] for r in rand])), 4) for key in rand[0]}
    out["random"]["seeds"] = seeds
    return out


def synthetic(n: int, d: int = 128, m: int = 1000, intrinsic: int = 16, seed: int = 0) -> np.ndarray:
    """Gaussian mixture: m centers ~ N(0, I), Dirichlet(2) weights, each cluster spread on its own
    random ``intrinsic``-dim subspace (scale U(0.3, 1)) plus 0.05 isotropic noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(m, d)).astype(np.float32)
    a = rng.choice(m, size=n, p=rng.dirichlet(np.full(m, 2.0)))
    basis = (rng.normal(size=(m, intrinsic, d)) / np.sqrt(intrinsic) * rng.uniform(0.3, 1.0, (m, 1, 1))).astype(
        np.float32
    )
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        z = rng.normal(size=(min(100_000, n - s), intrinsic)).astype(np.float32)
        x[s : s + len(z)] = centers[a[s : s + len(z)]] + np.einsum("ni,nid->nd", z, basis[a[s : s + len(z)]])
        x[s : s + len(z)] += 0.05 * rng.normal(size=(len(z), d)).astype(np.float32)
    return x


def bench_scale(n: int, k: int, exact_picks: int, radius_sample: int) -> dict:
    x = synthetic(n)
    out: dict = {"n": n, "k": k, "dim": x.shape[1], "torch_threads": torch.get_num_threads()}
    t = time.perf_counter()
    s_idx, s_radius_est = stratified_k_center(x, k, seed=0, radius_sample=radius_sample, **STRATIFIED)
    s_time = time.perf_counter() - t
    out["stratified"] = {
        "seconds": round(s_time, 1),
        "radius_on_sample": round(s_radius_est, 4),
        "radius_sample": radius_sample,
    }
    t = time.perf_counter()
    picks = k if exact_picks <= 0 else min(exact_picks, k)
    e_idx, e_radius = k_center_greedy(x, picks, **L2)
    e_time = time.perf_counter() - t
    full = picks == k
    out["exact"] = {
        "seconds": round(e_time if full else e_time * k / picks, 1),
        "timed_picks": picks,
        "extrapolated": not full,
    }
    if full:
        out["exact"]["radius"] = round(e_radius, 4)
        out["exact"]["radius_on_sample"] = round(covering_radius(x, e_idx, sample=radius_sample, seed=0, **L2), 4)
        out["stratified"]["radius"] = round(covering_radius(x, s_idx, **L2), 4)
    out["speedup"] = round(out["exact"]["seconds"] / s_time, 1)
    rand = np.random.default_rng(0).choice(n, k, replace=False)
    out["random_radius_on_sample"] = round(covering_radius(x, rand, sample=radius_sample, seed=0, **L2), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["aid", "scale"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--exact-picks", type=int, default=2000)
    ap.add_argument("--radius-sample", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = bench_aid() if args.part == "aid" else bench_scale(args.n, args.k, args.exact_picks, args.radius_sample)
    res["machine"] = machine()
    print(json.dumps(res, indent=2))
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = args.part if args.part == "aid" else f"scale-{args.n}-{args.k}"
    (CACHE / f"coreset-{tag}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
