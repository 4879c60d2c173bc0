"""Large-k k-means (issue 28): quality of HNSW assignment and sampled init, and the cluster step vs faiss.Kmeans.

``quality``: on several domains (a Gaussian mixture, sklearn's 8x8 digits upscaled to 16x16 with
shifts and noise, AID embeddings when cached), k-means at the domain's ``auto`` k from one
k-means++ start, 20 iterations: exact Lloyd vs HNSW Lloyd (``assign=hnsw``), and ``init=auto``
vs greedy k-means++ (exact Lloyd). The inertia of the final centroids is evaluated exactly (flat
search) so the approximation in the last assignment is counted too.

``speed``: ``run_cluster`` with the default config (auto k, 2 levels, 4 resampling steps, Ray
actors) on N x 128 mixture embeddings vs ``faiss.Kmeans`` (20 plain iterations, the same level-1
k, 2 OpenMP threads, random init) in a child process, in one invocation; plus the plan's
prediction of the cluster step for the same N (``strata plan`` validation).

    flock /tmp/strata-bench.lock .venv/bin/python -m benchmarks.kmeans_large_k quality
    flock /tmp/strata-bench.lock .venv/bin/python -m benchmarks.kmeans_large_k speed --n 30000 60000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.common import CACHE, machine


def mixture(n: int, d: int = 128, seed: int = 0, components: int = 4096) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(components, d)).astype(np.float32)
    return (mu[rng.integers(components, size=n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def digits(n: int = 10_000, seed: int = 0) -> np.ndarray:
    """sklearn's 1,797 8x8 grey digits upscaled to 16x16, shifted by up to 2 px, plus pixel noise."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    images = load_digits().images.astype(np.float32) / 16.0
    big = np.kron(images, np.ones((2, 2), np.float32))
    pick = rng.integers(len(big), size=n)
    out = np.empty((n, 16, 16), np.float32)
    shifts = rng.integers(-2, 3, size=(n, 2))
    for s in {tuple(v) for v in shifts}:  # a few distinct shifts, vectorised within each
        rows = np.flatnonzero((shifts[:, 0] == s[0]) & (shifts[:, 1] == s[1]))
        out[rows] = np.roll(big[pick[rows]], s, axis=(1, 2))
    out += 0.05 * rng.normal(size=out.shape).astype(np.float32)
    return out.reshape(n, -1)


def aid() -> np.ndarray | None:
    try:
        from benchmarks.common import aid_embeddings

        return aid_embeddings()[1]
    except Exception as exc:  # noqa: BLE001 - no cached embeddings and no way to make them: skip
        print(f"# AID skipped: {exc}")
        return None


def exact_inertia(x: np.ndarray, centroids: np.ndarray, metric: str) -> float:
    from pipeline.kmeans.shard import Shard

    shard = Shard(x, metric=metric)
    return shard.assign_all(centroids)[1]


def fit(x: np.ndarray, k: int, iters: int, init, metric: str, ci, seed: int = 0, flops: float = np.inf):
    from pipeline.kmeans.algorithm import LocalGroup, fit_group
    from pipeline.kmeans.shard import Shard

    group = LocalGroup([Shard(x, metric=metric, centroid_index=ci)])
    t = time.perf_counter()
    c, inertias = fit_group(
        group, k, iters, init=init, metric=metric, rng=np.random.default_rng(seed), init_sample_flops=flops
    )
    return c, time.perf_counter() - t


def quality(args) -> None:
    from pipeline.config import load_group
    from pipeline.kmeans.algorithm import kmeans_plus_plus_init
    from pipeline.kmeans.config import CentroidIndex, auto_n_clusters

    conf = load_group("kmeans/default")
    if args.entropy_only:
        aid_entropy(args, conf)
        return
    hnsw = CentroidIndex("hnsw", 1, conf["hnsw_m"], conf["hnsw_ef_construction"], conf["hnsw_ef_search"])
    exact = CentroidIndex("exact")
    domains = {"mixture-20k-d128": mixture(20_000), "digits16-10k-d256": digits()}
    if (a := aid()) is not None:
        domains[f"aid-10k-d{a.shape[1]}"] = a
    print(f"# {machine()}; load {os.getloadavg()}; shared machine")
    print("domain | k | exact s | hnsw s | inertia exact | inertia hnsw | rel. diff | init=auto inertia | vs k-means++")
    out = {}
    for name, x in domains.items():
        k = auto_n_clusters(len(x))[0]
        xs = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        start = kmeans_plus_plus_init(xs, k, 0, metric="cosine")
        ce, te = fit(x, k, args.iters, start, "cosine", exact)
        ch, th = fit(x, k, args.iters, start, "cosine", hnsw)
        ca, _ = fit(x, k, args.iters, "auto", "cosine", exact, flops=float(conf["init_sample_flops"]))
        ie, ih, ia = (exact_inertia(x, c, "cosine") for c in (ce, ch, ca))
        out[name] = dict(k=k, exact_s=te, hnsw_s=th, inertia_exact=ie, inertia_hnsw=ih, inertia_auto_init=ia)
        print(
            f"{name} | {k} | {te:.1f} | {th:.1f} | {ie:.2f} | {ih:.2f} | {(ih - ie) / ie:+.3%} | {ia:.2f} | "
            f"{(ia - ie) / ie:+.3%}",
            flush=True,
        )
    print(json.dumps(out))
    if "aid" in " ".join(domains):
        aid_entropy(args, conf)


def aid_entropy(args, conf: dict) -> None:
    """Normalised label entropy of a balanced subset (15%) of the AID long-tail pool
    (benchmarks.balance), default k-means config at the pool's auto k, with exact vs HNSW assignment
    and k-means++ vs init=auto (HNSW forced: AID's k is below the auto cut-off)."""
    import pyarrow.compute as pc

    from benchmarks.balance import long_tail_pool, metrics
    from benchmarks.common import aid_embeddings
    from pipeline.kmeans import hierarchical_kmeans
    from pipeline.kmeans.config import auto_n_clusters
    from pipeline.sampling import hierarchical_balanced_sampling

    table, x = aid_embeddings()
    names, labels = np.unique(np.asarray(pc.cast(table.column("label"), "string").to_pylist()), return_inverse=True)
    arms = {
        "exact, k-means++": {"assign": "exact", "init": "kmeans++"},
        "hnsw, k-means++": {"assign": "hnsw", "init": "kmeans++"},
        "hnsw, init=auto": {"assign": "hnsw", "init": "auto"},
    }
    print("AID long tail | seed | pool | k | arm | norm. entropy | seconds")
    for seed in args.seeds:
        pool = long_tail_pool(x, labels, seed)
        target = int(round(0.15 * len(pool.labels)))
        ks = auto_n_clusters(len(pool.labels))
        for arm, over in arms.items():
            cfg = {**conf, **over, "n_clusters": ks, "seed": seed, "metric": "cosine"}
            t = time.perf_counter()
            sel = hierarchical_balanced_sampling(hierarchical_kmeans(pool.x, cfg), target, strategy="random", rng=seed)
            m = metrics(pool.labels[sel.indices], pool.n_classes, pool.is_copy[sel.indices])
            print(f"| {seed} | {len(pool.labels)} | {ks} | {arm} | {m['entropy']:.4f} | {time.perf_counter() - t:.0f}")


def faiss_child(path: str, k: int, iters: int, threads: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)
    x = np.load(path)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=0, spherical=True, max_points_per_centroid=10**9)
    t = time.perf_counter()
    km.train(x)
    return {"seconds": time.perf_counter() - t}


def speed(args) -> None:
    import pyarrow as pa

    from benchmarks.common import ensure_ray
    from pipeline.config import load_group
    from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
    from pipeline.kmeans import run_cluster
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.plan import DEFAULT_CALIBRATION, Resources, load_calibration, plan_kmeans
    from pipeline.rundir import RunDir

    print(f"# {machine()}; shared machine")
    cal, _ = load_calibration(DEFAULT_CALIBRATION, 128)
    ensure_ray(2)
    conf = load_group("kmeans/default")
    rows = []
    for n in args.n:
        x = mixture(n, seed=1)
        path = CACHE / f"kmeans_large_k-{n}.npy"
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, x)
        kc = KMeansConfig.from_dict(dict(conf), n_points=n)
        k1 = kc.levels[0].n_clusters
        load0 = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "benchmarks.kmeans_large_k", "faiss-child", str(path), str(k1)]
        got = subprocess.run(cmd, capture_output=True, text=True, check=True)
        t_faiss = json.loads(got.stdout.strip().splitlines()[-1])["seconds"]
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            run = RunDir(tmp)
            ids = [f"img{i}" for i in range(n)]
            table = pa.table({"id": ids, "embedding": embeddings_to_arrow(x), "uri": [f"mem://{i}" for i in ids]})
            write_parquet_atomic(table, run.path("embeddings", "part-00000.parquet"))
            t = time.perf_counter()
            summary = run_cluster(run, dict(conf), seed=0, drop_duplicates=False)
            t_ours = time.perf_counter() - t
        planned = plan_kmeans(kc, n, 128, Resources.this_machine(), cal)
        row = dict(
            n=n,
            k=list(kc.n_clusters),
            faiss_s=t_faiss,
            cluster_s=t_ours,
            ratio=t_ours / t_faiss,
            level_s=[lv["seconds"] for lv in summary["levels"]],
            planned_s=[lv.seconds for lv in planned.levels],
            load=[load0, os.getloadavg()[0]],
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("N | k | faiss.Kmeans s | cluster step s | ratio | planned s | planned/measured | load")
    for r in rows:
        p = sum(r["planned_s"])
        print(
            f"{r['n']:,} | {r['k']} | {r['faiss_s']:.0f} | {r['cluster_s']:.0f} | {r['ratio']:.2f} | {p:.0f} | "
            f"{p / r['cluster_s']:.2f} | {r['load'][0]:.1f}-{r['load'][1]:.1f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--iters", type=int, default=20)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    q.add_argument("--entropy-only", action="store_true", help="only the AID label-entropy arms")
    s = sub.add_parser("speed")
    s.add_argument("--n", type=int, nargs="+", default=[30_000, 60_000, 100_000])
    c = sub.add_parser("faiss-child")
    c.add_argument("path")
    c.add_argument("k", type=int)
    args = ap.parse_args()
    if args.cmd == "quality":
        quality(args)
    elif args.cmd == "speed":
        speed(args)
    else:
        print(json.dumps(faiss_child(args.path, args.k, 20, 2)))


if __name__ == "__main__":
    main()
