"""Knowing when to stop: the audit's estimates of what the user exports against the oracle's truth.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.active_stop --data aid --classes 30 --seeds 2
    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m benchmarks.active_stop --data digits --seeds 3 --budget 0.2
    .venv/bin/python /work/shared/tools/growth.py --sizes 250000 500000 1000000 -- \
        .venv/bin/python -m benchmarks.active_stop --estimate-only {n}

Pools (embedded in-process with ``embed.features=stages``, the ``strata active`` default, cached under
``benchmarks/.cache``): ``aid``: every image of ``--classes`` AID classes (evenly spaced in name order; 30 =
all 10,000 images); ``digits``: scikit-learn's 1,797 8x8 grey handwritten digits, upscaled (non-aerial,
tiny grey images of simple shapes). Each class in turn is the positive class (oracle = the label), with
``--seeds`` random starters; least confidence, batches of ``--batch`` plus ``--audit-size`` audit draws, to
``--budget`` of the pool, with ``stop.recall`` off so the whole curve is recorded (the stop rule only reads
each round's record, so where it would stop is read off them).

Prints per round (means over runs) the truth and the estimate of the exported set's recall (human +
model positives), the model's precision and the human-labeled share; the mean absolute and mean signed
error, the 95% intervals' coverage over every (class, seed, round); and for each stop rule at
``--target`` the labels spent at the stop against the budget and the true exported recall there.
"""

from __future__ import annotations

import argparse
import glob
import io
import time

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import CACHE, DATASETS, machine
from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop

EMBED = {"backbone": "efficientnet_lite0", "image_size": 160, "features": "stages", "batch_size": 64}
# (name, truth column of the oracle's metrics, estimate prefix)
MEASURES = (
    ("exported recall", "positives_retrieved", "exported_recall"),
    ("model precision", "precision", "model_precision"),
    ("human-labeled share", "recall_labeled", "labeled_recall"),
)


def aid_subset(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), stage embeddings (N, D)) of every image of ``n_classes`` evenly spaced AID classes."""
    cache = CACHE / f"active_stop-aid150-{n_classes}-stages.npz"
    full = CACHE / "active_stop-aid150-30-stages.npz"
    for path in (cache, full):  # a subset of the 30-class cache is the same rows' embeddings
        if path.exists():
            with np.load(path) as z:
                labels, x = z["labels"], z["x"]
            classes = sorted(set(labels.tolist()))
            keep = np.isin(labels, classes[:: max(1, len(classes) // n_classes)][:n_classes])
            return labels[keep], x[keep]
    from pipeline.embed.embedder import Embedder

    tables = [
        pq.read_table(p, columns=["label", "image"]) for p in sorted(glob.glob(str(DATASETS / "aid150" / "*.parquet")))
    ]
    labels = np.concatenate([np.asarray(t.column("label").to_pylist(), dtype=str) for t in tables])
    classes = sorted(set(labels.tolist()))
    keep_classes = classes[:: max(1, len(classes) // n_classes)][:n_classes]
    embedder = Embedder(EMBED)
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


def ucmerced() -> tuple[np.ndarray, np.ndarray]:
    """(labels (2100,), stage embeddings) of every UC Merced image (21 classes of 100, 256 px aerial)."""
    cache = CACHE / "active_stop-ucmerced-stages.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["labels"], z["x"]
    from pipeline.embed.embedder import Embedder

    embedder = Embedder(EMBED)
    xs, ls = [], []
    for path in sorted(glob.glob(str(DATASETS / "ucmerced" / "*.parquet"))):
        t = pq.read_table(path, columns=["label", "image"])
        images = t.column("image").to_pylist()
        xs += [embedder.embed_bytes(images[i : i + 256]) for i in range(0, len(images), 256)]
        ls.append(np.asarray(t.column("label").to_pylist(), dtype=str))
    labels, x = np.concatenate(ls), np.concatenate(xs).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, labels=labels, x=x)
    return labels, x


def digits() -> tuple[np.ndarray, np.ndarray]:
    """(labels (1797,), stage embeddings) of scikit-learn's 8x8 grey digits, upscaled to 64 px PNGs."""
    cache = CACHE / "active_stop-digits-stages.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["labels"], z["x"]
    from PIL import Image
    from sklearn.datasets import load_digits

    from pipeline.embed.embedder import Embedder

    d = load_digits()
    images = []
    for img in d.images:
        buf = io.BytesIO()
        Image.fromarray((255 - img * 16).clip(0, 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR).save(
            buf, "PNG"
        )
        images.append(buf.getvalue())
    x = Embedder(EMBED).embed_bytes(images).astype(np.float32)
    labels = d.target.astype(str)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, labels=labels, x=x)
    return labels, x


def stop_point(history: list[dict], target: float, rule: str, precision: float | None = None) -> dict | None:
    """The first round record where the rule fires (None: ran to the budget); mirrors ``loop.stop_rule``."""
    key = "lo" if rule == "lower" else "est"

    def fires(h: dict) -> bool:
        r = h.get(f"exported_recall_{key}")
        p = 1.0 if h.get("n_model_positive") == 0 else h.get(f"model_precision_{key}")
        return r is not None and r >= target and (precision is None or (p is not None and p >= precision))

    return next((h for h in history if fires(h)), None)


def estimate_only(n: int, labeled: int = 500, dim: int = 64, repeats: int = 5) -> None:
    """The per-round estimate alone (cross-fitting + calibrated sums + audit totals) on a synthetic pool of ``n``
    rows with ``labeled`` labels, ``repeats`` times: its cost should follow ``n`` (``growth.py``)."""
    from pipeline.active.heads import build_head
    from pipeline.active.loop import LoopState, _estimate_export

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    truth = x[:, 0] > 1.5
    rows = rng.choice(n, labeled, replace=False)
    audit = rows[-80:]
    state = LoopState(
        rows=rows,
        labels=truth[rows].astype(np.int8),
        label_round=np.repeat(np.arange(5), labeled // 5).astype(np.int32),
        round=4,
        audit_rows=audit,
        audit_q=np.full(80, 1.0 / n),
        audit_round=np.repeat(np.arange(1, 5), 20).astype(np.int32)[: len(audit)],
    )
    state.label_round[-80:] = state.audit_round
    cfg = ActiveConfig.from_dict({"stop": {"audit_size": 16}})
    head = build_head(cfg.head).fit(x[rows], truth[rows].astype(np.int8))
    extra = np.zeros((0, dim), np.float32)
    t0 = time.perf_counter()
    for r in range(repeats):
        probs = head.predict_proba(x)
        _estimate_export(x, extra, state, head, probs, cfg, np.random.default_rng(r))
    print(f"n={n}: {(time.perf_counter() - t0) / repeats:.3f}s per round")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("aid", "digits", "ucmerced"), default="aid")
    ap.add_argument("--classes", type=int, default=30, help="aid: classes in the pool")
    ap.add_argument("--positives", type=int, default=None, help="use only the first N classes as the positive class")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n-neighbors", type=int, default=64)
    ap.add_argument("--n-random", type=int, default=32)
    ap.add_argument("--audit-size", type=int, default=16)
    ap.add_argument("--uniform-share", type=float, default=0.2)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--precision", type=float, default=None, help="also evaluate stop.precision at this target")
    ap.add_argument("--estimate-only", type=int, default=None, help="time the per-round estimate on N rows")
    args = ap.parse_args()
    if args.estimate_only:
        return estimate_only(args.estimate_only)
    t0 = time.time()
    labels, x = (
        aid_subset(args.classes) if args.data == "aid" else {"digits": digits, "ucmerced": ucmerced}[args.data]()
    )
    classes = sorted(set(labels.tolist()))[: args.positives]
    print(f"pool {x.shape} ({args.data}), {len(classes)} positive classes, embedded/cached in {time.time() - t0:.0f}s")
    stop = {
        "audit_size": args.audit_size,
        "uniform_share": args.uniform_share,
        "window": args.window,
        "folds": args.folds,
    }
    runs = []
    for c in classes:
        truth = labels == c
        for s in range(args.seeds):
            rng = np.random.default_rng([s, len(runs)])
            starter = int(rng.choice(np.flatnonzero(truth)))
            cfg = ActiveConfig.from_dict(
                {
                    "budget": args.budget,
                    "seed": s,
                    "batch_size": args.batch,
                    "n_neighbors": args.n_neighbors,
                    "n_random": args.n_random,
                    "stop": stop,
                }
            )
            res = run_loop(x, OracleLabeler(truth), cfg, starter_rows=[starter], truth=truth)
            runs.append((c, s, res.state.history))
    t1 = time.time()
    n_rounds = max(len(h) for _, _, h in runs)
    print(
        f"\n{len(runs)} runs ({len(classes)} classes x {args.seeds} seeds), audit {args.audit_size}/round, "
        f"budget {args.budget}, {t1 - t0:.0f}s; "
        f"cross-fitting {np.mean([r['crossfit_seconds'] for _, _, h in runs for r in h if 'crossfit_seconds' in r]):.2f}s/round"
    )
    print(
        "| round | labeled | exported recall: true / est. / mean abs. err. / covered | "
        "model precision: true / est. / mean abs. err. / covered | human-labeled share: true / est. / covered |"
    )
    print("|---:|---:|---|---|---|")
    for _, _, h in runs:
        for rec in h:
            if rec.get("missed_head") is not None:
                f, m, fp, fn = (
                    rec["n_positive_labeled"],
                    rec["n_model_positive"],
                    rec["false_calls_head"],
                    rec["missed_head"],
                )
                rec["head_recall_est"] = (f + m - fp) / max(f + m - fp + fn, 1e-9)
                rec["head_precision_est"] = None if m == 0 else (m - fp) / m
    head_err = {"exported recall": [], "model precision": []}
    summary = {name: {"err": [], "cov": []} for name, _, _ in MEASURES}
    for r in range(n_rounds):
        recs = [h[r] for _, _, h in runs if len(h) > r and h[r].get("exported_recall_est") is not None]
        if not recs:
            continue
        cells = []
        for name, true_key, pre in MEASURES:
            ok = [
                h
                for h in recs
                if h.get(f"{pre}_est") is not None and not (pre == "model_precision" and h["n_model_positive"] == 0)
            ]
            if not ok:
                cells.append("-")
                continue
            true = np.array([h[true_key] for h in ok])
            est = np.array([h[f"{pre}_est"] for h in ok])
            lo, hi = np.array([h[f"{pre}_lo"] for h in ok]), np.array([h[f"{pre}_hi"] for h in ok])
            cov = (lo <= true + 1e-4) & (true <= hi + 1e-4)
            summary[name]["err"] += (est - true).tolist()
            if name in head_err:
                old = np.array([h["head_" + pre.split("_")[1] + "_est"] for h in ok], dtype=np.float64)
                head_err[name] += (old - true).tolist()
            summary[name]["cov"] += cov.tolist()
            extra = "" if pre == "labeled_recall" else f" / {np.abs(est - true).mean():.3f}"
            cells.append(f"{true.mean():.3f} / {est.mean():.3f}{extra} / {cov.mean():.2f}")
        print(f"| {r} | {np.mean([h['n_labeled'] for h in recs]):.0f} | " + " | ".join(cells) + " |")
    print()
    for name, v in summary.items():
        err, cov = np.array(v["err"]), np.array(v["cov"])
        print(
            f"{name}: over {len(err)} (class, seed, round): mean abs. error {np.abs(err).mean():.3f}, "
            f"mean signed error {err.mean():+.3f}, |error| <= 0.03 in {np.mean(np.abs(err) <= 0.03):.2f}, "
            f"95% interval coverage {cov.mean():.3f}"
        )
    for name, err in head_err.items():
        err = np.array(err)
        print(
            f"{name}, the head's own scores (before the calibration): mean abs. error {np.abs(err).mean():.3f}, "
            f"mean signed error {err.mean():+.3f}"
        )
    budget_labels = np.array([h[-1]["n_labeled"] for _, _, h in runs])
    final_true = np.array([h[-1]["positives_retrieved"] for _, _, h in runs])
    print(f"\nat the budget ({budget_labels.sum()} labels): true exported recall mean {final_true.mean():.3f}")
    oracle = [next((h for h in hist if h["positives_retrieved"] >= args.target), None) for _, _, hist in runs]
    spent = np.array([s["n_labeled"] if s else b for s, b in zip(oracle, budget_labels)])
    at_stop = np.array([s["positives_retrieved"] if s else t for s, t in zip(oracle, final_true)])
    print(
        f"oracle rule (stops at the first round whose TRUE exported recall >= {args.target}: the most any rule can "
        f"save): fired in {sum(s is not None for s in oracle)}/{len(runs)} runs; {1 - spent.sum() / budget_labels.sum():.1%} "
        f"saved; true exported recall where each run ended: mean {at_stop.mean():.3f}, min {at_stop.min():.3f}"
    )
    rules = [("point", None), ("lower", None)] + ([("point", args.precision)] if args.precision else [])
    for rule, prec in rules:
        stops = [stop_point(h, args.target, rule, prec) for _, _, h in runs]
        fired = [s for s in stops if s is not None]
        spent = np.array([s["n_labeled"] if s else b for s, b in zip(stops, budget_labels)])
        at_stop = np.array([s["positives_retrieved"] if s else t for s, t in zip(stops, final_true)])
        prec_txt = f" and model_precision >= {prec}" if prec else ""
        print(
            f"rule={rule} exported_recall >= {args.target}{prec_txt}: fired in {len(fired)}/{len(runs)} runs; labels "
            f"{spent.sum()} of {budget_labels.sum()} ({1 - spent.sum() / budget_labels.sum():.1%} saved); true "
            f"exported recall where each run ended (stop or budget): mean {at_stop.mean():.3f}, min {at_stop.min():.3f}, "
            f"share >= target {np.mean(at_stop >= args.target):.2f}"
        )
    print(f"\n{machine()}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
