"""k-means beyond memory: out-of-core shards vs in-memory shards on the same data, in one run.

N x D float32 (a Gaussian mixture) is generated to a ``.npy`` in chunks (never the whole matrix in
memory). Each side runs in its own child process: shards (``--backend local``: in that process;
``ray``: one single-threaded Ray actor per shard) read their rows, then

1. the Lloyd rate: ``--iters`` timed iterations from the same random init (after one untimed);
2. hierarchical k-means with resampling (``--k`` per level), every step written like ``strata
   cluster`` does (shards write parts, the driver merges them), wall time per level.

Peak RSS is the sum of every process's high-water mark (``VmHWM``: driver + actors). The
out-of-core side streams rows from a local spill file within ``--budget-mb`` per shard.

    .venv/bin/python -m benchmarks.kmeans_out_of_core --n 2000000 --budget-mb 256 [--backend ray]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, ensure_ray, machine


def make_data(n: int, d: int, seed: int = 0, rows: int = 100_000) -> Path:
    """Gaussian mixture (1,024 components) written block by block to ``benchmarks/.cache``."""
    from pipeline.kmeans.shard import npy_header

    path = CACHE / f"kmeans-ooc-{n}x{d}.npy"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        mu = rng.normal(size=(1024, d)).astype(np.float32)
        with open(str(path) + ".tmp", "wb") as fh:
            fh.write(npy_header((n, d), np.float32))
            for a in range(0, n, rows):
                b = min(n, a + rows)
                block = mu[rng.integers(1024, size=b - a)] + 0.5 * rng.normal(size=(b - a, d)).astype(np.float32)
                fh.write(block.astype(np.float32).tobytes())
        os.replace(str(path) + ".tmp", path)
    return path


def vm_hwm() -> int:
    """Peak resident set of this process (``VmHWM``), bytes."""
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def side(args: argparse.Namespace, out_of_core: bool) -> dict:
    """Child process: one side of the comparison; returns its timings and peak RSS."""
    from pipeline.kmeans.algorithm import LocalGroup, lloyd, random_init
    from pipeline.kmeans.hierarchical import KMeansConfig, fit_level
    from pipeline.kmeans.levels import load_step_centroids
    from pipeline.kmeans.run import save_step_from_shards, shard_kwargs, start_shards
    from pipeline.kmeans.shard import Shard, ShardSource
    from pipeline.rundir import RunDir

    local = args.backend == "local"
    if not local:
        ensure_ray(num_cpus=args.shards)
    path = str(make_data(args.n, args.dim))
    ks = [int(k) for k in args.k.split(",")]
    cfg = KMeansConfig.from_dict(
        {
            "n_clusters": ks,
            "n_iters": [args.iters] * len(ks),
            "n_resampling_steps": [args.resampling_steps] * len(ks),
            "sample_size": [10] * len(ks),
            "resampling_strategy": ["random"] + ["closest"] * (len(ks) - 1),
            "init": args.init,
            "metric": "l2",
            "n_actors": args.shards,
            "in_process": local,
            "threads_per_actor": 1,
            "cpus_per_actor": 1,
            "chunk_mb": args.chunk_mb,
            "out_of_core": out_of_core,
            "memory_budget_mb": args.budget_mb if out_of_core else None,
        }
    )
    bounds = np.linspace(0, args.n, args.shards + 1).astype(int)
    sources = [ShardSource("npy", ((path, int(a), int(b)),)) for a, b in zip(bounds[:-1], bounds[1:])]
    out: dict = {"out_of_core": out_of_core}
    t = time.perf_counter()
    group, _ = start_shards(sources, cfg)
    out["load_s"] = round(time.perf_counter() - t, 1)
    run = RunDir(tempfile.mkdtemp(prefix="kmeans-ooc-bench-", dir=args.out_dir))
    actor_rss: list[int] = []
    try:
        out["spilled_shards"] = int(sum(group.call("spilled")))
        start = random_init(group, ks[0], np.random.default_rng(0))
        lloyd(group, start, 1, "l2", tol=0.0)  # warm-up
        t = time.perf_counter()
        _, inertias = lloyd(group, start, args.rate_iters, "l2", tol=0.0)
        out["lloyd_s_per_iter"] = round((time.perf_counter() - t) / args.rate_iters, 3)
        out["lloyd_inertia"] = inertias[-1]
        out["levels"], previous = [], None
        for level, lc in enumerate(cfg.levels, start=1):
            t = time.perf_counter()
            if level > 1:  # upper levels cluster the centroids in the driver, as ``strata cluster`` does
                if not local:
                    actor_rss = [r[1] for r in group.call("peak_rss")]
                group.close()
                group = LocalGroup([Shard(previous, **shard_kwargs(cfg, *previous.shape))])

            def on_step(step: int, centroids: np.ndarray, *_, level: int = level, cur=group) -> None:
                save_step_from_shards(run, cur, level, step, centroids, cfg.chunk_mb)

            previous = fit_level(group, lc, cfg, level, on_step=on_step)
            out["levels"].append({"level": level, "k": lc.n_clusters, "seconds": round(time.perf_counter() - t, 1)})
        _, n_items = load_step_centroids(run, 1, cfg.levels[0].n_resampling_steps)
        out["n_items_level_1"] = n_items
    finally:
        group.close()
        shutil.rmtree(run.root, ignore_errors=True)
    out["peak_rss_driver_mb"] = round(vm_hwm() / 2**20, 1)
    out["peak_rss_actors_mb"] = round(sum(actor_rss) / 2**20, 1)
    out["peak_rss_total_mb"] = round(out["peak_rss_driver_mb"] + out["peak_rss_actors_mb"], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", default="200,20", help="clusters per level, comma-separated")
    ap.add_argument("--iters", type=int, default=5, help="Lloyd iterations per k-means run")
    ap.add_argument("--resampling-steps", type=int, default=1)
    ap.add_argument("--init", choices=["random", "kmeans++"], default="random")
    ap.add_argument("--rate-iters", type=int, default=3, help="timed Lloyd iterations for the rate")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--budget-mb", type=float, default=256, help="out-of-core memory budget per shard")
    ap.add_argument("--chunk-mb", type=float, default=32)
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument("--sides", default="in_memory,out_of_core")
    ap.add_argument("--out-dir", default=None, help="where the step files and spills go (default: tmp)")
    ap.add_argument("--side", choices=["in_memory", "out_of_core"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(side(args, args.side == "out_of_core")))
        return
    t = time.perf_counter()
    make_data(args.n, args.dim)
    print(
        f"data: {args.n} x {args.dim} float32 ({args.n * args.dim * 4 / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s"
    )
    results = {}
    for name in args.sides.split(","):
        cmd = [sys.executable, "-m", "benchmarks.kmeans_out_of_core", *sys.argv[1:], "--side", name]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    summary = {
        "machine": machine(),
        "backend": args.backend,
        "shape": [args.n, args.dim],
        "matrix_mb": round(args.n * args.dim * 4 / 2**20, 1),
        "k": args.k,
        "budget_mb_per_shard": args.budget_mb,
        "shards": args.shards,
        **results,
    }
    if len(results) == 2:
        summary["out_of_core_over_in_memory_s_per_iter"] = round(
            results["out_of_core"]["lloyd_s_per_iter"] / results["in_memory"]["lloyd_s_per_iter"], 3
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
