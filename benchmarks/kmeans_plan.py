"""`strata plan`'s predictions against measured hierarchical k-means runs at a few sizes.

For every size N (x ``--dim``, Gaussian blobs), a child process clusters the rows in-process
(one shard, one thread, ``kmeans.in_process`` as ``strata cluster`` runs it) with ``--k`` per level,
and reports wall time per level and its peak RSS (``VmHWM``). The parent prints them next to
:func:`pipeline.kmeans.plan.plan_kmeans`'s prediction from the stored calibration (made first when
missing); the memory prediction's process baseline is the child's RSS before its rows exist.

    .venv/bin/python -m benchmarks.kmeans_plan --sizes 20000 100000 300000 --dim 64 --k 500 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import machine


def _kmeans_cfg(k: list[int]) -> dict:
    n = len(k)
    return dict(
        n_clusters=k,
        n_iters=[20] * n,
        n_resampling_steps=[1] * n,
        sample_size=[8] * n,
        metric="l2",
        n_actors=1,
        in_process=True,
        threads_per_actor=1,
        chunk_mb=64.0,
    )


def _vm(key: str) -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))


def child(n: int, dim: int, k: list[int]) -> dict:
    """Cluster N x dim blobs in this process; wall time per level, baseline and peak RSS (bytes)."""
    from pipeline.kmeans.algorithm import LocalGroup
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.hierarchical import fit_level
    from pipeline.kmeans.plan import _rss_mb
    from pipeline.kmeans.shard import Shard

    kc = KMeansConfig.from_dict(_kmeans_cfg(k))
    baseline = _rss_mb() * 2**20
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(1024, dim)).astype(np.float32) * 3
    x = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, 10_000):  # block by block: no N-sized temporaries in the peak
        b = min(n, a + 10_000)
        x[a:b] = mu[rng.integers(1024, size=b - a)] + 0.3 * rng.standard_normal((b - a, dim), dtype=np.float32)
    seconds, items = [], x
    for level, lc in enumerate(kc.levels, start=1):
        t0 = time.perf_counter()
        group = LocalGroup([Shard(items, metric=kc.metric, threads=1, chunk_mb=kc.chunk_mb, out_of_core=False)])
        items = fit_level(group, lc, kc, level)
        seconds.append(time.perf_counter() - t0)
        if level == 1:
            peak_level1 = _vm("VmHWM:")
    return {"seconds": seconds, "baseline": baseline, "peak_level1": peak_level1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, nargs="+", default=[500, 50])
    ap.add_argument("--calibration", default=None, help="calibration JSON (default: ~/.cache/strata/calibration.json)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.dim, args.k)))
        return
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.kmeans.plan import DEFAULT_CALIBRATION, Resources, load_calibration, plan_kmeans

    cal, fresh = load_calibration(args.calibration or DEFAULT_CALIBRATION, args.dim, False)
    print(f"# {machine()}; shared with other work (loaded)")
    print(
        f"# calibration D={cal.dim} ({'measured now' if fresh else 'stored'}): Lloyd "
        f"{cal.lloyd_gflops_per_thread:.1f}, k-means++ {cal.kmeanspp_gflops_per_thread:.1f} GFLOP/s per thread"
    )
    print("N | level | k | predicted s | measured s | ratio | predicted peak MiB | measured peak MiB | ratio")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for n in args.sizes:
        cmd = [sys.executable, "-m", "benchmarks.kmeans_plan", "--child", str(n), "--dim", str(args.dim), "--k"]
        out = subprocess.run([*cmd, *map(str, args.k)], env=env, capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        cal.baseline_mb = got["baseline"] / 2**20
        kc = KMeansConfig.from_dict(_kmeans_cfg(args.k))
        plan = plan_kmeans(kc, n, args.dim, Resources.this_machine(), cal)
        for lv, measured in zip(plan.levels, got["seconds"]):
            mem = ""
            if lv.level == 1:
                p, m = lv.memory_per_actor / 2**20, got["peak_level1"] / 2**20
                mem = f" | {p:.0f} | {m:.0f} | {p / m:.2f}"
            print(
                f"{n:,} | {lv.level} | {lv.k} | {lv.seconds:.2f} | {measured:.2f} | {lv.seconds / measured:.2f}"
                + (mem or " | | |")
            )


if __name__ == "__main__":
    main()
