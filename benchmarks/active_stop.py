"""Knowing when to stop: the audit's estimated recall against the oracle's on AID.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.active_stop --classes 10 --seeds 3 --audit-size 16

Pool: every image of ``--classes`` AID classes (every third class in name order; 10 classes = 3,300
images), embedded in-process with ``embed.features=stages`` (the ``strata active`` default) and cached
under ``benchmarks/.cache``. Each class in turn is the positive class (oracle = the ``label`` column),
with ``--seeds`` random starters; the loop runs with ``strategy=least_confidence``, batches of 64 plus
``--audit-size`` audit draws, to ``--budget`` of the pool, and ``stop.recall`` off so the whole curve is
seen (the stop rule acts on the same per-round records, so where it would stop is read off them).

Prints per round (averaged over runs) the true recall of the labeled set, the estimate and its
interval; the interval's coverage of the truth over every (class, seed, round); and, for the rules
``lower`` and ``point`` at ``--target``, the labels spent at the stop against the budget and the true
recall there.
"""

from __future__ import annotations

import argparse
import glob
import time

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import CACHE, DATASETS, machine
from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop


def aid_subset(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), stage embeddings (N, D)) of every image of ``n_classes`` AID classes."""
    cache = CACHE / f"active_stop-aid150-{n_classes}-stages.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["labels"], z["x"]
    from pipeline.embed import Embedder

    tables = [
        pq.read_table(p, columns=["label", "image"]) for p in sorted(glob.glob(str(DATASETS / "aid150" / "*.parquet")))
    ]
    labels = np.concatenate([np.asarray(t.column("label").to_pylist(), dtype=str) for t in tables])
    keep_classes = sorted(set(labels.tolist()))[::3][:n_classes]
    embedder = Embedder({"backbone": "efficientnet_lite0", "image_size": 160, "features": "stages", "batch_size": 64})
    xs, ls = [], []
    for t in tables:
        lab = np.asarray(t.column("label").to_pylist(), dtype=str)
        rows = np.flatnonzero(np.isin(lab, keep_classes))
        images = t.column("image").take(rows).to_pylist()
        for i in range(0, len(images), 256):
            xs.append(embedder.embed_bytes(images[i : i + 256]))
            print(f"embedded {sum(map(len, xs))} images", flush=True)
        ls.append(lab[rows])
    labels, x = np.concatenate(ls), np.concatenate(xs).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, labels=labels, x=x)
    return labels, x


def stop_point(history: list[dict], target: float, rule: str) -> dict | None:
    """The first round record where the rule fires (None: ran to the budget)."""
    key = "recall_lo" if rule == "lower" else "recall_est"
    return next((h for h in history if h.get(key) is not None and h[key] >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--audit-size", type=int, default=16)
    ap.add_argument("--uniform-share", type=float, default=0.2)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.95)
    args = ap.parse_args()
    t0 = time.time()
    labels, x = aid_subset(args.classes)
    print(f"pool {x.shape} from {args.classes} classes, embedded/cached in {time.time() - t0:.0f}s")
    stop = {"audit_size": args.audit_size, "uniform_share": args.uniform_share, "window": args.window}
    runs = []
    for c in sorted(set(labels.tolist())):
        truth = labels == c
        for s in range(args.seeds):
            rng = np.random.default_rng([s, len(runs)])
            starter = int(rng.choice(np.flatnonzero(truth)))
            cfg = ActiveConfig.from_dict({"budget": args.budget, "seed": s, "stop": stop})
            res = run_loop(x, OracleLabeler(truth), cfg, starter_rows=[starter], truth=truth)
            runs.append((c, s, res.state.history, int(truth.sum())))
    t1 = time.time()
    n_rounds = max(len(h) for _, _, h, _ in runs)
    print(
        f"\n{len(runs)} runs ({args.classes} classes x {args.seeds} seeds), audit {args.audit_size}/round, {t1 - t0:.0f}s"
    )
    print("| round | labeled | true recall | estimated | interval (mean lo - hi) | covered |")
    print("|---:|---:|---:|---:|---|---:|")
    covered_all = []
    for r in range(n_rounds):
        recs = [h[r] for _, _, h, _ in runs if len(h) > r and h[r].get("recall_est") is not None]
        if not recs:
            continue
        true = np.array([h["recall_labeled"] for h in recs])
        lo, hi = np.array([h["recall_lo"] for h in recs]), np.array([h["recall_hi"] for h in recs])
        cov = (lo <= true + 1e-9) & (true <= hi + 1e-9)
        covered_all += cov.tolist()
        print(
            f"| {r} | {np.mean([h['n_labeled'] for h in recs]):.0f} | {true.mean():.3f} | "
            f"{np.mean([h['recall_est'] for h in recs]):.3f} | {lo.mean():.3f} - {hi.mean():.3f} | {cov.mean():.2f} |"
        )
    print(
        f"\ncoverage of the {int(100 * 0.95)}% interval over {len(covered_all)} (class, seed, round): {np.mean(covered_all):.3f}"
    )
    per_class = {}
    for c, _, h, _ in runs:
        recs = [r for r in h if r.get("recall_est") is not None]
        per_class.setdefault(c, []).extend(
            (r["recall_lo"] <= r["recall_labeled"] + 1e-9 <= r["recall_hi"] + 2e-9) for r in recs
        )
    print("coverage per class:", ", ".join(f"{c} {np.mean(v):.2f}" for c, v in per_class.items()))
    for rule in ("lower", "point"):
        budget_labels = [h[-1]["n_labeled"] for _, _, h, _ in runs]
        stops = [stop_point(h, args.target, rule) for _, _, h, _ in runs]
        fired = [s for s in stops if s is not None]
        spent = [s["n_labeled"] if s else b for s, b in zip(stops, budget_labels)]
        final = [s["recall_labeled"] if s else h[-1]["recall_labeled"] for s, (_, _, h, _) in zip(stops, runs)]
        print(
            f"rule={rule} stop.recall={args.target}: fired in {len(fired)}/{len(runs)} runs; labels "
            f"{np.sum(spent)} of {np.sum(budget_labels)} ({1 - np.sum(spent) / np.sum(budget_labels):.1%} saved); "
            f"true recall at the stop: mean {np.mean([s['recall_labeled'] for s in fired]) if fired else float('nan'):.3f}, "
            f"min {min([s['recall_labeled'] for s in fired], default=float('nan')):.3f}, "
            f"share >= target {np.mean([s['recall_labeled'] >= args.target for s in fired]) if fired else float('nan'):.2f}; "
            f"true recall at the end of every run (stopped or budget) mean {np.mean(final):.3f}"
        )
    print(f"\n{machine()}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
