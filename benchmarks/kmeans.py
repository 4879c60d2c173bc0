"""k-means throughput: Strata's Ray k-means vs single-process ``faiss.Kmeans``, in one run.

1,000,000 x 128 float32 (a Gaussian mixture), k = 1000, 10 Lloyd iterations, random init on
both sides, the same total thread count (``--threads``): FAISS with that many OpenMP threads in
one process, Strata with that many single-threaded shard actors. The sides alternate
(``--rounds`` each) in one invocation; FAISS runs in a child process so that each side's peak
RSS is its own. Both sides get the same untimed warm-up (one assignment pass over all rows).
Reports seconds per iteration, the ratio, GFLOP/s of the assignment GEMM (``2 N k D`` flops per
iteration) against a measured SGEMM peak, and peak RSS vs the matrix.

    .venv/bin/python -m benchmarks.kmeans [--n 1000000 --dim 128 --k 1000 --iters 10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, ensure_ray, machine


def make_data(n: int, d: int, seed: int = 0) -> Path:
    """Gaussian mixture (4,096 components) saved once as ``.npy`` under ``benchmarks/.cache``."""
    path = CACHE / f"kmeans-{n}x{d}.npy"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        mu = rng.normal(size=(4096, d)).astype(np.float32)
        x = np.lib.format.open_memmap(str(path) + ".tmp", mode="w+", dtype=np.float32, shape=(n, d))
        for a in range(0, n, 100_000):
            b = min(n, a + 100_000)
            x[a:b] = mu[rng.integers(4096, size=b - a)] + 0.5 * rng.normal(size=(b - a, d)).astype(np.float32)
        x.flush()
        del x
        os.replace(str(path) + ".tmp", path)
    return path


def sgemm_peak(threads: int) -> float:
    """Best GFLOP/s of a 4096^2 float32 matmul with ``threads`` BLAS/OpenMP threads."""
    from threadpoolctl import threadpool_limits

    a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32)
    with threadpool_limits(threads):
        best = min(_timed(lambda: a @ a) for _ in range(5))
    return 2 * 4096**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def faiss_side(path: str, k: int, iters: int, threads: int, seed: int) -> dict:
    """Child process: load the matrix, train faiss.Kmeans on all of it; per-iteration seconds."""
    import faiss

    faiss.omp_set_num_threads(threads)
    x = np.load(path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # the same untimed warm-up Strata's side gets (one assignment pass of every row against k random rows)
    warm = faiss.IndexFlatL2(x.shape[1])
    warm.add(x[np.random.default_rng(seed).choice(len(x), k, replace=False)])
    warm.search(x, 1)
    del warm
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=10**9, verbose=False)
    t = time.perf_counter()
    km.train(x)
    total = time.perf_counter() - t
    stats = km.iteration_stats
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "seconds_per_iter": total / iters,
        "obj": float(stats[-1]["obj"]),
        "peak_rss": peak_rss,
        "rss_after_load": rss0,
        "sgemm_peak_gflops": sgemm_peak(threads),  # measured after the RSS reading
    }


def strata_side(
    path: str, n: int, k: int, iters: int, threads: int, seed: int, chunk_mb: float, backend: str = "ray"
) -> dict:
    """Ray actors (one thread each) holding contiguous shards read from the ``.npy`` themselves;
    ``backend="local"``: one in-process shard with ``threads`` FAISS threads (no Ray)."""
    from pipeline.kmeans.algorithm import lloyd, random_init
    from pipeline.kmeans.hierarchical import KMeansConfig
    from pipeline.kmeans.run import start_shards
    from pipeline.kmeans.shard import ShardSource

    local = backend == "local"
    cfg = KMeansConfig.from_dict(
        {
            "n_clusters": [k],
            "n_actors": 1 if local else threads,
            "in_process": local,
            "threads_per_actor": threads if local else 1,
            "cpus_per_actor": 0.5,
            "chunk_mb": chunk_mb,
            "metric": "l2",
        }
    )
    n_shards = 1 if local else threads
    bounds = np.linspace(0, n, n_shards + 1).astype(int)
    sources = [ShardSource("npy", ((path, int(a), int(b)),)) for a, b in zip(bounds[:-1], bounds[1:])]
    group, _ = start_shards(sources, cfg)
    try:
        start = random_init(group, k, np.random.default_rng(seed))
        group.call("lloyd_stats", start)  # warm-up: FAISS index code paths, first-touch of buffers
        t = time.perf_counter()
        _, inertias = lloyd(group, start, iters, cfg.metric, tol=0.0)
        total = time.perf_counter() - t
        rss = group.call("peak_rss")
    finally:
        group.close()
    return {
        "seconds_per_iter": total / iters,
        "obj": inertias[-1],
        "peak_rss_actors": int(sum(r[1] for r in rss)),
        "rss_increase_actors": int(sum(r[1] - r[0] for r in rss)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk-mb", type=float, default=32)
    ap.add_argument(
        "--backend",
        choices=["ray", "local"],
        default="ray",
        help="ray: one single-threaded actor per thread; local: one in-process shard (no Ray)",
    )
    ap.add_argument("--faiss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = make_data(args.n, args.dim)
    if args.faiss_child:
        print(json.dumps(faiss_side(str(path), args.k, args.iters, args.threads, 0)))
        return

    if args.backend == "ray":
        ensure_ray(num_cpus=args.threads)
    matrix_bytes = args.n * args.dim * 4
    flops = 2 * args.n * args.k * args.dim
    child = [
        sys.executable,
        "-m",
        "benchmarks.kmeans",
        "--faiss-child",
        "--n",
        str(args.n),
        "--dim",
        str(args.dim),
        "--k",
        str(args.k),
        "--iters",
        str(args.iters),
        "--threads",
        str(args.threads),
    ]
    results: dict[str, list[dict]] = {"faiss": [], "strata": []}
    for r in range(args.rounds):
        out = subprocess.run(child, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        results["faiss"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        results["strata"].append(
            strata_side(str(path), args.n, args.k, args.iters, args.threads, r, args.chunk_mb, args.backend)
        )
        print(
            f"round {r}: faiss {results['faiss'][-1]['seconds_per_iter']:.3f} s/it, "
            f"strata {results['strata'][-1]['seconds_per_iter']:.3f} s/it",
            flush=True,
        )

    peak = max(x["sgemm_peak_gflops"] for x in results["faiss"])
    f_it = float(np.median([x["seconds_per_iter"] for x in results["faiss"]]))
    s_it = float(np.median([x["seconds_per_iter"] for x in results["strata"]]))
    summary = {
        "machine": machine(),
        "backend": args.backend,
        "shape": [args.n, args.dim],
        "k": args.k,
        "iters": args.iters,
        "threads": args.threads,
        "rounds": args.rounds,
        "sgemm_peak_gflops": round(peak, 1),
        "faiss_s_per_iter": round(f_it, 3),
        "strata_s_per_iter": round(s_it, 3),
        "ratio_strata_over_faiss": round(s_it / f_it, 3),
        "faiss_gflops": round(flops / f_it / 1e9, 1),
        "strata_gflops": round(flops / s_it / 1e9, 1),
        "strata_fraction_of_peak": round(flops / s_it / 1e9 / peak, 3),
        "matrix_mb": round(matrix_bytes / 2**20, 1),
        "strata_rss_increase_over_matrix": round(
            max(x["rss_increase_actors"] for x in results["strata"]) / matrix_bytes, 3
        ),
        "strata_peak_rss_over_matrix": round(max(x["peak_rss_actors"] for x in results["strata"]) / matrix_bytes, 3),
        "faiss_peak_rss_over_matrix": round(max(x["peak_rss"] for x in results["faiss"]) / matrix_bytes, 3),
        "final_inertia": {"faiss": results["faiss"][-1]["obj"], "strata": results["strata"][-1]["obj"]},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
