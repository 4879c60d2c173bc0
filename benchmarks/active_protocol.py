"""The paper's active-labeling protocol on AID (30 classes, 10,000 images), per class and on average.

    .venv/bin/python -m benchmarks.active_protocol --features imagenet --n-starters 10 --variants least_confidence
    .venv/bin/python -m benchmarks.active_protocol --features imagenet --embed-features stages --tta rot4 --n-starters 10
    .venv/bin/python -m benchmarks.active_protocol --features imagenet --n-starters 3            # every variant
    .venv/bin/python -m benchmarks.active_protocol --features random   --n-starters 3
    .venv/bin/python -m benchmarks.active_protocol --features ssl --checkpoint runs/x/pretrain/last.pt

Features: ``imagenet`` (EfficientNet-Lite0, ImageNet weights, ``benchmarks.common.aid_embeddings``),
``random`` (random-init ResNet-18), ``ssl`` (a ``strata pretrain`` checkpoint); ``--embed-features stages``
pools every stage from stride 8 on instead of the last layer, ``--tta`` averages rotated/flipped views. Seed set 64 NN + 32
random, 64 per round, stop at 5% labeled; oracle from the ``label`` column.

Every invocation also runs the plain least-confidence baseline (ImageNet last-layer features, no
TTA, default loop settings, same starters and budget) and prints it as the ``baseline`` row, so
the comparison is computed here rather than quoted (``--no-baseline`` skips it).
"""

from __future__ import annotations

import argparse
import json
import time

import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import CACHE, aid_embeddings, dataset_embeddings, machine
from pipeline.active.config import ActiveConfig
from pipeline.active.evaluate import MEASURES, per_class, protocol_runs, summarize
from pipeline.io.tables import write_parquet_atomic

VARIANTS = {
    "random": {"strategy": "random"},
    "least_confidence": {"strategy": "least_confidence"},
    "margin": {"strategy": "margin"},
    "entropy": {"strategy": "entropy"},
    "lc+iterative_proximity": {"strategy": "least_confidence", "diversity": "iterative_proximity"},
    "lc+clustering": {"strategy": "least_confidence", "diversity": "clustering"},
    "lc+coreset": {"strategy": "least_confidence", "diversity": "coreset"},
}


def features(kind: str, checkpoint: str | None, image_size: int = 160, pooled: str = "head", tta: str = "none"):
    if kind == "imagenet":
        return aid_embeddings(image_size=image_size, features=pooled, tta=tta)
    if kind == "random":
        return dataset_embeddings("aid150", backbone="resnet18", image_size=image_size, features=pooled, tta=tta)
    if kind == "ssl":
        if not checkpoint:
            raise SystemExit("--features ssl needs --checkpoint")
        return dataset_embeddings(
            "aid150", backbone="ssl", checkpoint=checkpoint, image_size=image_size, features=pooled, tta=tta
        )
    raise SystemExit(f"unknown --features {kind}")


BASELINE = "baseline"


def baseline_runs(args, table, runs: pa.Table, has_extra: bool, progress) -> pa.Table:
    """The plain least-confidence baseline (ImageNet head features, no TTA, default settings) on
    the same classes, starters and budget; reuses ``runs`` when they already are exactly that."""
    plain = args.features == "imagenet" and args.embed_features == "head" and args.tta == "none" and not has_extra
    if plain and "least_confidence" in args.variants:
        same = runs.filter(pc.equal(runs.column("variant"), "least_confidence"))
    else:
        btable, bx = features("imagenet", None, args.image_size, "head", "none")
        config = ActiveConfig.from_dict({**VARIANTS["least_confidence"], "budget": args.budget})
        same = protocol_runs(
            bx,
            btable.column("label").to_pylist(),
            {BASELINE: config},
            n_starters=args.n_starters,
            seed=args.seed,
            ids=btable.column("id").to_pylist(),
            progress=progress,
        )
    return same.set_column(same.schema.get_field_index("variant"), "variant", pa.array([BASELINE] * same.num_rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", default="imagenet", choices=["imagenet", "random", "ssl"])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--image-size", type=int, default=160, help="embedding input size (SSL: the pretraining size)")
    ap.add_argument(
        "--embed-features",
        default="head",
        choices=["head", "stages"],
        help="embed.features: last layer or multi-scale stages",
    )
    ap.add_argument(
        "--tta", default="none", choices=["none", "flip", "rot4", "d4"], help="embed.tta: test-time views averaged"
    )
    ap.add_argument("--n-starters", type=int, default=10)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--budget", type=float, default=0.05)
    ap.add_argument(
        "--set", nargs="*", default=[], help="extra loop settings key=value (e.g. threshold=0.6 head.c=0.1)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", action="store_true", help="print the per-class table of the first variant")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain least-confidence baseline row")
    args = ap.parse_args()

    table, x = features(args.features, args.checkpoint, args.image_size, args.embed_features, args.tta)
    extra: dict = {}
    for kv in args.set:
        key, value = kv.split("=", 1)
        node = extra
        *path, leaf = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    variants = {v: ActiveConfig.from_dict({**VARIANTS[v], "budget": args.budget, **extra}) for v in args.variants}
    t0 = time.time()
    n_done = [0]

    def progress(row: dict) -> None:
        n_done[0] += 1
        if n_done[0] % 25 == 0:
            print(f"  {n_done[0]} runs, {time.time() - t0:.0f}s; last {row}", flush=True)

    runs = protocol_runs(
        x,
        table.column("label").to_pylist(),
        variants,
        n_starters=args.n_starters,
        seed=args.seed,
        ids=table.column("id").to_pylist(),
        progress=progress,
    )
    if not args.no_baseline:
        runs = pa.concat_tables([runs, baseline_runs(args, table, runs, bool(extra), progress)])
    tag = (
        f"{args.features}-{args.embed_features}-tta_{args.tta}-{args.image_size}px-n{args.n_starters}-b{args.budget}"
        + ("-" + "-".join(args.set) if args.set else "")
    )
    write_parquet_atomic(runs, str(CACHE / f"active_protocol-{tag}.parquet"))
    print(
        f"\nAID {x.shape}, features={args.features} ({args.embed_features}, tta {args.tta}) at {args.image_size} px, {args.n_starters} starters/class, budget {args.budget}, "
        f"settings {extra or 'default'}; {time.time() - t0:.0f}s; {machine()}"
    )
    print("| variant | runs | effort | retrieved | false pos. | F1 | runs >= 0.92 retrieved |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in summarize(runs):
        print(
            f"| {s['variant']} | {s['runs']} | {s['labeling_effort']:.3f} | {s['positives_retrieved']:.3f} | "
            f"{s['false_positive_rate']:.3f} | {s['f1']:.3f} | {s['share_retrieved_ge_0.92']:.2f} |"
        )
    if args.per_class:
        first = args.variants[0]
        print(f"\nper class ({first}):\n| class | " + " | ".join(MEASURES) + " |\n|---|" + "---:|" * len(MEASURES))
        for r in per_class(runs, first):
            print(f"| {r['class']} | " + " | ".join(f"{r[k]:.3f}" for k in MEASURES) + " |")


if __name__ == "__main__":
    main()
