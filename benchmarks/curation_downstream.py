"""Downstream proof of balanced curation: SSL trained on the curated subset vs a random subset vs the pool.

1. **Held out first.** From AID (``../shared/datasets/aid150``, 30 classes), ``--per-class`` images
   of every class (by ``crc32(id)``) form a labeled probe-train set and as many a test set; both
   are class-balanced and never enter the pool.
2. **A long-tailed, redundant pool** from the rest: class sizes Zipf-like (``max_class * r^-alpha``
   for rank r of a seeded class order, at least ``min_class``), and in ``--inflated`` head
   classes ``--copies`` re-encoded copies of ``--copy-sources`` images each (brightness x U(0.8,
   1.2), JPEG quality U(60, 90), half of them also flipped).
3. **Three arms**, each pretrained with SimCLR (``pipeline.ssl.pretrain``, the code of ``strata
   pretrain``: ``small_cnn``, 64 px, satellite augmentation) on the **same number of images seen**
   (``--seen``): (a) ``strata curate`` with its defaults (``pipeline.curate.run_curate`` on the
   pool Parquet: embed, dedup, k-means ``auto``, balanced sampling of ``--fraction`` of the pool),
   (b) a uniformly random subset of the same size, (c) the whole pool.
4. **Evaluation**: the frozen backbone embeds probe-train and test images (the embed stage's
   ``Embedder``); kNN (k=20, cosine) and a linear probe (multinomial logistic regression,
   L-BFGS) trained on probe-train, accuracy on the balanced test set, overall and on the tail
   (the half of the classes with the fewest pool images). Repeated for ``--seeds`` seeds.

    .venv/bin/python -m benchmarks.curation_downstream --seeds 3
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageEnhance, ImageOps

from benchmarks.common import CACHE, DATASETS, REPO, machine
from benchmarks.ssl_knn import embed, init_local_ray, knn_accuracy

ARMS = ("curated", "random", "whole pool", "random init")
"""``random init``: the same backbone untrained (no images seen): the floor every pretrained arm must beat."""


def load_aid() -> pa.Table:
    tables = [
        pq.read_table(p, columns=["id", "label", "image"]) for p in sorted((DATASETS / "aid150").glob("*.parquet"))
    ]
    return pa.concat_tables(tables).sort_by("id")


def split(table: pa.Table, per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (probe-train, test, rest): ``per_class`` of each class for each held-out set."""
    ids, labels = table.column("id").to_pylist(), np.asarray(table.column("label").to_pylist())
    rank = np.array([zlib.crc32(i.encode()) for i in ids])
    probe, test, rest = [], [], []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rows = rows[np.argsort(rank[rows], kind="stable")]
        probe.append(rows[:per_class])
        test.append(rows[per_class : 2 * per_class])
        rest.append(rows[2 * per_class :])
    return np.concatenate(probe), np.concatenate(test), np.concatenate(rest)


def reencode(data: bytes, rng: np.random.Generator) -> bytes:
    """A re-encoded copy: brightness drift, JPEG at a random quality, half of them flipped."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=int(rng.integers(60, 91)))
    return out.getvalue()


def build_pool(table: pa.Table, rest: np.ndarray, args: argparse.Namespace) -> tuple[pa.Table, dict[str, int]]:
    """The long-tailed pool (``id``, ``label``, ``image``, ``copy_of``) and each class's distinct-image count."""
    rng = np.random.default_rng(1234)  # the pool is the same for every seed
    labels = np.asarray(table.column("label").to_pylist())
    classes = np.unique(labels)
    order = rng.permutation(classes)
    sizes: dict[str, int] = {}
    picked = []
    for r, c in enumerate(order, start=1):
        rows = rest[labels[rest] == c]
        n = int(min(len(rows), max(args.min_class, round(args.max_class * r**-args.alpha))))
        picked.append(rng.choice(rows, n, replace=False))
        sizes[str(c)] = n
    base = table.take(pa.array(np.sort(np.concatenate(picked)))).select(["id", "label", "image"])
    base = base.append_column("copy_of", pa.array([None] * len(base), pa.string()))
    copies = {"id": [], "label": [], "image": [], "copy_of": []}
    base_labels = np.asarray(base.column("label").to_pylist())
    for c in order[: args.inflated]:
        rows = np.flatnonzero(base_labels == c)
        for row in rng.choice(rows, min(args.copy_sources, len(rows)), replace=False):
            src = base.slice(int(row), 1).to_pylist()[0]
            for k in range(args.copies):
                copies["id"].append(f"{src['id']}~copy{k}")
                copies["label"].append(src["label"])
                copies["image"].append(reencode(src["image"], rng))
                copies["copy_of"].append(src["id"])
    pool = pa.concat_tables([base, pa.table(copies, schema=base.schema)])
    return pool, sizes


def curate_subset(pool_path: str, size: int, seed: int, run_dir: str, strategy: str | None = None) -> np.ndarray:
    """Ids chosen by ``strata curate`` with its defaults (only the input, size, seed and run dir set;
    ``strategy``: a ``sample.strategy`` other than the default)."""
    from hydra import compose, initialize_config_dir

    from jobs._config import to_dict
    from pipeline.curate import run_curate
    from pipeline.rundir import RunDir

    overrides = [
        f"input.path={pool_path}",
        f"run_dir={run_dir}",
        f"seed={seed}",
        f"sample.target_size={size}",
        "report.enabled=false",
        "ray.num_cpus=2",
        *([f"sample.strategy={strategy}"] if strategy else []),
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = to_dict(compose("curate", overrides=overrides))
    run = RunDir(run_dir)
    counts = run_curate(run, cfg)
    from pipeline.artifacts import MANIFEST

    manifest = pq.read_table(run.path(MANIFEST), columns=["id", "multiplicity"])
    print(
        f"  curate seed {seed}: dedup {counts.get('dedup')}, k {[lv['n_clusters'] for lv in counts['cluster']['levels']]}",
        flush=True,
    )
    ids = np.asarray(manifest.column("id").to_pylist())
    return np.repeat(ids, np.asarray(manifest.column("multiplicity").to_pylist()))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, wd: float = 1e-3) -> np.ndarray:
    """Predicted labels of a multinomial logistic regression on standardised features (L-BFGS)."""
    classes, y = np.unique(train_y, return_inverse=True)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a = torch.from_numpy((train_x - mu) / sd).float()
    b = torch.from_numpy((test_x - mu) / sd).float()
    target = torch.from_numpy(y)
    layer = torch.nn.Linear(a.shape[1], len(classes))
    opt = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(a), target) + wd * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return classes[layer(b).argmax(1).numpy()]


def pretrain_on(
    rows: pa.Table, seen: int, seed: int, args: argparse.Namespace, out: str
) -> tuple[Any, dict, float, int]:
    """SimCLR on ``rows`` (``id``, ``image``) for about ``seen`` images; (module, meta, seconds, seen)."""
    import ray
    from hydra import compose, initialize_config_dir

    from jobs._config import to_dict
    from pipeline.ssl.checkpoint import load_backbone
    from pipeline.ssl.train import pretrain

    batch = args.batch_size
    per_epoch = (len(rows) // batch) * batch
    epochs = max(1, math.ceil(seen / per_epoch))
    steps = math.ceil(seen / batch / epochs)
    overrides = [
        "ssl=simclr",
        "ssl/augment=satellite",
        f"ssl.image_size={args.image_size}",
        "ssl.backbone.name=small_cnn",
        "ssl.backbone.width=32",
        "ssl.backbone.blocks_per_stage=1",
        f"train.epochs={epochs}",
        f"train.max_steps_per_epoch={steps}",
        f"train.warmup_epochs={min(1, epochs - 1)}",
        f"train.batch_size={batch}",
        "train.torch_threads=1",
        f"train.name=downstream-{int(time.time() * 1000)}",
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    config = {"ssl": to_dict(cfg.ssl), "train": to_dict(cfg.train), "seed": seed, "run_dir": out}
    t0 = time.perf_counter()
    result = pretrain(config, ray.data.from_arrow(rows.select(["id", "image"])).repartition(8))
    module, _, meta = load_backbone(result.checkpoint)
    return module, meta, time.perf_counter() - t0, epochs * steps * batch


def untrained(meta: dict | None, seed: int) -> tuple[Any, dict, float, int]:
    """The arms' backbone with its random initialisation (seeded), no pretraining; same tuple as pretrain_on."""
    from pipeline.backbones import build_ssl_backbone

    assert meta is not None, "random init is evaluated after a pretrained arm (it reuses its meta)"
    options = dict(meta["backbone"])
    torch.manual_seed(seed)
    module, _ = build_ssl_backbone(options.pop("name"), **options)
    return module.eval(), meta, 0.0, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=30, help="held-out images per class, for each of probe/test")
    parser.add_argument("--max-class", type=int, default=300)
    parser.add_argument("--min-class", type=int, default=12)
    parser.add_argument("--alpha", type=float, default=1.0, help="Zipf exponent of the class sizes")
    parser.add_argument("--inflated", type=int, default=3, help="head classes that get re-encoded copies")
    parser.add_argument("--copy-sources", type=int, default=100)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.25, help="subset size as a fraction of the pool")
    parser.add_argument("--seen", type=int, default=16384, help="images seen in pretraining, every arm")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=str(CACHE / "downstream"))
    parser.add_argument("--strategy", default=None, help="sample.strategy of the curated arm (default: conf's)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if unknown := sorted(set(arms) - set(ARMS)):
        parser.error(f"unknown arms {unknown}: choose from {', '.join(ARMS)}")
    if arms == ["random init"]:
        parser.error("random init needs a pretrained arm too (it reuses its input normalisation)")
    start = time.perf_counter()

    table = load_aid()
    probe_rows, test_rows, rest = split(table, args.per_class)
    pool, sizes = build_pool(table, rest, args)
    pool_path = f"{args.out}/pool.parquet"
    os.makedirs(args.out, exist_ok=True)
    pq.write_table(pool, pool_path, row_group_size=256)
    size = int(round(args.fraction * len(pool)))
    is_copy = pool.column("copy_of").is_valid().to_numpy(zero_copy_only=False)
    n_copies = int(is_copy.sum())
    tail = sorted(sizes, key=sizes.get)[: len(sizes) // 2]
    print(
        f"pool {len(pool)} ({n_copies} copies), classes {min(sizes.values())}..{max(sizes.values())}, "
        f"subset {size}, probe {len(probe_rows)}, test {len(test_rows)}",
        flush=True,
    )
    init_local_ray(object_store_memory=int(1e9))

    probe_images = table.take(pa.array(probe_rows)).column("image").to_pylist()
    test_images = table.take(pa.array(test_rows)).column("image").to_pylist()
    labels = np.asarray(table.column("label").to_pylist())
    probe_y, test_y = labels[probe_rows], labels[test_rows]
    tail_mask = np.isin(test_y, tail)
    pool_ids = np.asarray(pool.column("id").to_pylist())
    by_id = np.argsort(pool_ids)
    is_copy = pool.column("copy_of").is_valid().to_numpy(zero_copy_only=False)

    records = []
    for seed in range(args.seeds):
        chosen = {
            "curated": curate_subset(pool_path, size, seed, f"{args.out}/curate", args.strategy)
            if "curated" in arms
            else None,
            "random": np.random.default_rng(seed).choice(pool_ids, size, replace=False),
            "whole pool": pool_ids,
            "random init": pool_ids,
        }
        meta: dict | None = None
        for arm in sorted(arms, key=lambda a: a == "random init"):  # random init last: reuses a meta
            ids = chosen[arm]
            rows = pool.take(pa.array(by_id[np.searchsorted(pool_ids[by_id], ids)]))
            row_labels = np.asarray(rows.column("label").to_pylist())
            _, counts = np.unique(row_labels, return_counts=True)
            p = counts / counts.sum()
            if arm == "random init":
                module, meta, secs, seen = untrained(meta, seed)
            else:
                module, meta, secs, seen = pretrain_on(rows, args.seen, seed, args, f"{args.out}/ssl-{seed}")
            px, tx = embed(module, meta, probe_images), embed(module, meta, test_images)
            knn_acc = knn_accuracy(px, probe_y, tx, test_y)
            knn_tail = knn_accuracy(px, probe_y, tx[tail_mask], test_y[tail_mask])
            lin = linear_probe(px, probe_y, tx)
            rec = {
                "seed": seed,
                "arm": arm,
                "images": len(rows),
                "copies": int(np.isin(rows.column("id").to_pylist(), pool_ids[is_copy]).sum()),
                "label_entropy": float(-(p * np.log(p)).sum() / math.log(len(sizes))),
                "seen": seen,
                "pretrain_s": round(secs, 1),
                "knn": knn_acc,
                "knn_tail": knn_tail,
                "linear": float((lin == test_y).mean()),
                "linear_tail": float((lin[tail_mask] == test_y[tail_mask]).mean()),
            }
            print(json.dumps(rec), flush=True)
            records.append(rec)

    print(f"\n{machine()}\ntotal {time.perf_counter() - start:.0f} s; tail classes: {tail}\n")
    print("| arm | images | copies | norm. label entropy | kNN | kNN tail | linear | linear tail | pretrain s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm in [a for a in ARMS if a in arms]:
        rs = [r for r in records if r["arm"] == arm]

        def ms(key: str, rs: list = rs, pct: bool = True) -> str:
            v = np.array([r[key] for r in rs]) * (100 if pct else 1)
            return f"{v.mean():.1f} ± {v.std():.1f}" if pct else f"{v.mean():.3f}"

        print(
            f"| {arm} | {rs[0]['images']} | {np.mean([r['copies'] for r in rs]):.0f} | {ms('label_entropy', pct=False)} "
            f"| {ms('knn')} | {ms('knn_tail')} | {ms('linear')} | {ms('linear_tail')} "
            f"| {np.mean([r['pretrain_s'] for r in rs]):.0f} |"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "curation_downstream.jsonl", "a") as fh:
        fh.write(json.dumps({"args": vars(args), "machine": machine(), "records": records}) + "\n")


if __name__ == "__main__":
    main()
