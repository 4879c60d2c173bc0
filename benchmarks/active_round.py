"""One active-learning round on a 1,000,000 x 128 pool: fit head, score all, select 64 (+ diversity).

    .venv/bin/python -m benchmarks.active_round [--n 1000000] [--dim 128] [--labeled 5000] [--repeats 3]

Target: <= 3 s per round on the project machine. The pool is clustered synthetic data (64 Gaussian
blobs, positive class = one blob); the labeled set is ``--labeled`` random rows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine
from pipeline.active.config import ActiveConfig
from pipeline.active.heads import build_head
from pipeline.active.loop import LoopState, select_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--labeled", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--diversity", nargs="*", default=["none", "iterative_proximity", "clustering", "coreset"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(64, args.dim)).astype(np.float32)
    blob = rng.integers(64, size=args.n)
    x = centers[blob] + rng.normal(size=(args.n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = blob == 0
    rows = rng.choice(args.n, size=args.labeled, replace=False)
    labels = truth[rows].astype(np.int8)
    print(f"pool {x.shape}, {args.labeled} labeled; {machine()}")
    for diversity in args.diversity:
        cfg = ActiveConfig.from_dict({"diversity": diversity})
        head = build_head(cfg.head)
        head.set_feature_stats(x.mean(0), x.std(0))
        head.fit(x[rows], labels)  # the previous round: later fits are warm-started
        times = []
        labeled_rows, labeled_y = rows, labels
        for rep in range(args.repeats):
            new = rng.choice(
                np.setdiff1d(np.arange(args.n), labeled_rows), size=64, replace=False
            )  # last round's batch
            labeled_rows = np.concatenate([labeled_rows, new])
            labeled_y = np.concatenate([labeled_y, truth[new].astype(np.int8)])
            state = LoopState(
                rows=labeled_rows, labels=labeled_y, label_round=np.zeros(len(labeled_rows), np.int32), round=rep
            )
            t0 = time.perf_counter()
            head.fit(x[labeled_rows], labeled_y)
            t1 = time.perf_counter()
            probs = head.predict_proba(x)
            t2 = time.perf_counter()
            picks = select_batch(x, probs, state, cfg, 64, np.random.default_rng(rep))
            t3 = time.perf_counter()
            assert len(np.unique(picks)) == 64
            times.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
        best = min(times)
        med = sorted(times)[len(times) // 2]
        print(
            f"| {diversity} | {med[0]:.2f} s | {best[0]:.2f} s | fit {med[1]:.2f} / score {med[2]:.2f} / select {med[3]:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
