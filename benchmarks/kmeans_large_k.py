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
from dataclasses import asdict

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

    shard = Shard(x, metric=metric, out_of_core=False)
    return shard.assign_all(centroids)[1]


def fit(
    x: np.ndarray, k: int, iters: int, init, metric: str, ci, seed: int = 0, flops: float = np.inf, tol: float = 0.0
):
    from pipeline.kmeans.algorithm import LocalGroup, fit_group
    from pipeline.kmeans.shard import Shard

    group = LocalGroup([Shard(x, metric=metric, centroid_index=ci, out_of_core=False)])
    t = time.perf_counter()
    c, inertias = fit_group(
        group, k, iters, init=init, metric=metric, rng=np.random.default_rng(seed), init_sample_flops=flops, tol=tol
    )
    return c, time.perf_counter() - t, len(inertias)


def quality(args) -> None:
    from pipeline.config import load_group
    from pipeline.kmeans.algorithm import kmeans_plus_plus_init
    from pipeline.kmeans.config import CentroidIndex, auto_n_clusters

    conf = load_group("kmeans/default")
    spread(conf)
    if args.entropy_only:
        aid_entropy(args, conf)
        return
    hnsw = CentroidIndex("hnsw", 1, conf["hnsw_m"], conf["hnsw_ef_construction"], conf["hnsw_ef_search"])
    reuse = CentroidIndex(*list(asdict(hnsw).values())[:-1], conf["hnsw_rebuild_every"])
    exact = CentroidIndex("exact")
    domains = {"mixture-20k-d128": mixture(20_000), "digits16-10k-d256": digits()}
    if (a := aid()) is not None:
        domains[f"aid-10k-d{a.shape[1]}"] = a
    print(f"# {machine()}; load {os.getloadavg()}; shared machine")
    print(
        "domain | k | exact s | hnsw s | inertia exact | inertia hnsw | rel. diff | init=auto inertia | vs k-means++"
        f" | hnsw tol={conf['tol']}: iterations, s, vs exact | graph rebuilt every {conf['hnsw_rebuild_every']}: s, vs exact"
    )
    out = {}
    for name, x in domains.items():
        k = auto_n_clusters(len(x))[0]
        xs = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        start = kmeans_plus_plus_init(xs, k, 0, metric="cosine")
        ce, te, _ = fit(x, k, args.iters, start, "cosine", exact)
        ch, th, _ = fit(x, k, args.iters, start, "cosine", hnsw)
        ca, _, _ = fit(x, k, args.iters, "auto", "cosine", exact, flops=float(conf["init_sample_flops"]))
        ct, tt, it = fit(x, k, args.iters, start, "cosine", hnsw, tol=float(conf["tol"]))
        cr, tr, _ = fit(x, k, args.iters, start, "cosine", reuse)
        ie, ih, ia, itol, ir = (exact_inertia(x, c, "cosine") for c in (ce, ch, ca, ct, cr))
        out[name] = dict(
            k=k,
            exact_s=te,
            hnsw_s=th,
            inertia_exact=ie,
            inertia_hnsw=ih,
            inertia_auto_init=ia,
            inertia_tol=itol,
            reuse_s=tr,
            inertia_reuse=ir,
        )
        print(
            f"{name} | {k} | {te:.1f} | {th:.1f} | {ie:.2f} | {ih:.2f} | {(ih - ie) / ie:+.3%} | {ia:.2f} | "
            f"{(ia - ie) / ie:+.3%} | {it}, {tt:.1f}, {(itol - ie) / ie:+.3%} | {tr:.1f}, {(ir - ie) / ie:+.3%}",
            flush=True,
        )
    print(json.dumps(out))
    if "aid" in " ".join(domains):
        aid_entropy(args, conf)


def spread(conf: dict) -> None:
    """Vo et al.'s effect of resampling: share of 40 centroids left in a dense blob holding 80% of
    5,000 2-D points (plain k-means puts ~density^(d/(d+2)) there), after 0 / 4 / 10 resampling steps
    of 4 closest points per cluster, by init, ``resample_init`` and ``tol``."""
    from pipeline.kmeans.hierarchical import hierarchical_kmeans

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(4000, 2)) * 0.3, rng.uniform(-10, 10, size=(1000, 2))]).astype(np.float32)
    print("dense blob | init | resample_init | tol | share of centroids in the blob after 0 / 4 / 10 steps")
    for init in ("kmeans++", "random"):
        for mode in ("fresh", "warm"):
            for tol in (0.0, float(conf["tol"])):
                share = []
                for steps in (0, 4, 10):
                    cfg = {"n_clusters": [40], "n_iters": 20, "n_resampling_steps": [steps], "sample_size": [4]}
                    cfg.update(metric="l2", init=init, resample_init=mode, tol=tol)
                    (level,) = hierarchical_kmeans(x, cfg)
                    share.append(float((np.abs(level.centroids).max(1) < 1.2).mean()))
                print(f"| {init} | {mode} | {tol} | " + " / ".join(f"{v:.3f}" for v in share), flush=True)


def aid_entropy(args, conf: dict) -> None:
    """Normalised label entropy of a balanced subset (15%) of the AID long-tail pool
    (benchmarks.balance), default k-means config at the pool's auto k, with exact vs HNSW assignment
    and k-means++ vs init=auto (HNSW forced: AID's k is below the auto cut-off)."""
    import pyarrow.compute as pc

    from benchmarks.balance import long_tail_pool, metrics
    from benchmarks.common import aid_embeddings
    from pipeline.kmeans.config import auto_n_clusters
    from pipeline.kmeans.hierarchical import hierarchical_kmeans
    from pipeline.sampling.balanced import hierarchical_balanced_sampling

    table, x = aid_embeddings()
    names, labels = np.unique(np.asarray(pc.cast(table.column("label"), "string").to_pylist()), return_inverse=True)
    fresh = {"resample_init": "fresh", "tol": 0.0}
    arms = {
        "exact, k-means++": {"assign": "exact", "init": "kmeans++", **fresh},
        "hnsw, k-means++": {"assign": "hnsw", "init": "kmeans++", **fresh},
        "hnsw, init=auto": {"assign": "hnsw", "init": "auto", **fresh},
        f"hnsw, init=auto, tol={conf['tol']}": {"assign": "hnsw", "init": "auto", "tol": conf["tol"]},
        "hnsw, init=auto, warm": {"assign": "hnsw", "init": "auto", "resample_init": "warm", "tol": conf["tol"]},
    }
    print("AID long tail | seed | pool | k | arm | norm. entropy | seconds")
    for seed in args.seeds:
        pool = long_tail_pool(x, labels, seed)
        target = int(round(0.15 * len(pool.labels)))
        ks = auto_n_clusters(len(pool.labels))
        for arm, over in arms.items():
            cfg = {**conf, **over, "n_clusters": ks, "seed": seed, "metric": "cosine"}
            t = time.perf_counter()
            sel = hierarchical_balanced_sampling(
                hierarchical_kmeans(pool.x, cfg),
                target,
                strategy="random",
                multiplier=1,
                pick_level=1,
                allocation_power=0.0,
                rng=seed,
            )
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
    import logging

    import pyarrow as pa

    from benchmarks.common import ensure_ray
    from pipeline.config import load_group
    from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.plan import DEFAULT_CALIBRATION, Resources, load_calibration, plan_kmeans
    from pipeline.kmeans.run import run_cluster
    from pipeline.rundir import RunDir

    print(f"# {machine()}; shared machine")
    step_log = logging.getLogger("pipeline.kmeans.hierarchical")  # per step: inertia, Lloyd iterations run
    step_log.setLevel(logging.INFO)
    step_log.addHandler(logging.StreamHandler(sys.stdout))
    cal, _ = load_calibration(DEFAULT_CALIBRATION, 128, False)
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
        t_faiss = float("nan")
        if not args.no_faiss:
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
    s.add_argument("--no-faiss", action="store_true", help="skip faiss.Kmeans (hours at 1M and k=66k)")
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
