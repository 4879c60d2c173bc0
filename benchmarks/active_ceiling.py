"""How well could any linear head separate each AID class with these features? A supervised ceiling.

For each class, a one-vs-rest logistic regression (balanced class weights, standardised features,
the loop head's settings) is trained on 4/5 of AID with *every* label known and scores the held-out
fifth (5-fold, stratified); recall and the false-positive share of its positive predictions are
reported. The active loop sees 5% of the labels; where even this ceiling stays far below 0.92
recall, the protocol's "runs >= 0.92 retrieved" is out of reach for any head on these features.

    .venv/bin/python -m benchmarks.active_ceiling --embed-features stages --tta rot4
    .venv/bin/python -m benchmarks.active_ceiling --classes Resort Square School Center Park
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import aid_embeddings, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embed-features", default="stages", choices=["head", "stages"])
    ap.add_argument("--tta", default="rot4", choices=["none", "flip", "rot4", "d4"])
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--classes", nargs="*", default=None, help="default: every class")
    ap.add_argument("--c", type=float, default=1.0)
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    table, x = aid_embeddings(image_size=args.image_size, features=args.embed_features, tta=args.tta)
    labels = np.asarray(table.column("label").to_pylist())
    x = StandardScaler().fit_transform(x)
    classes = args.classes or sorted(set(labels.tolist()))
    t0 = time.time()
    print(
        f"AID {x.shape}, {args.embed_features} features, tta {args.tta}, {args.image_size} px; 5-fold, all labels known; {machine()}"
    )
    print("| class | images | recall (p >= 0.5) | false-positive share | recall (p >= 0.2) | false-positive share |")
    print("|---|---:|---:|---:|---:|---:|")
    recalls = []
    for c in classes:
        y = (labels == c).astype(int)
        p = np.zeros(len(y))
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
            head = LogisticRegression(C=args.c, class_weight="balanced", max_iter=500).fit(x[train], y[train])
            p[test] = head.predict_proba(x[test])[:, 1]
        cells = []
        for threshold in (0.5, 0.2):
            pred = p >= threshold
            cells += [pred[y == 1].mean(), (pred & (y == 0)).sum() / max(int(pred.sum()), 1)]
        recalls.append(cells[0])
        print(f"| {c} | {int(y.sum())} | " + " | ".join(f"{v:.3f}" for v in cells) + " |", flush=True)
    print(f"\nmean recall at 0.5 over {len(classes)} classes: {np.mean(recalls):.3f}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
