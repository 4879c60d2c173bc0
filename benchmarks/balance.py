"""Balanced curation vs random subsets on AID embeddings: long tail and redundancy scenarios.

For each scenario and each configuration, over ``--seeds`` seeds: build the pool, run
hierarchical k-means with resampling + hierarchical balanced sampling (the in-process API, the
same code the Ray job runs), draw a random subset of the same size, and measure on the
ground-truth labels:

- normalised entropy ``H(p) / ln C`` of the subset's class distribution (C = classes in the pool),
- classes covered, and the smallest class's count (0 when a class is missing),
- (redundancy) the share of near-duplicate copies in the subset.

1. Long tail: class sizes ``n_r = 400 r^{-a}``, r = 1..30, ``a = ln 40 / ln 30`` (400 -> 10),
   subset 15% of the pool.
2. Redundancy: 30 images per class plus, for 3 head classes, 15 near-duplicate copies (flips,
   small crops, JPEG re-encodes, embedded with ``pipeline.embed.Embedder``) of 30 of their images,
   so the head classes hold ~64% of the pool; subset 10%.

    .venv/bin/python -m benchmarks.balance [--seeds 5] [--scenario long_tail redundancy]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import dataclass

import numpy as np

from benchmarks.common import CACHE, DATASETS, aid_embeddings, machine
from pipeline.kmeans.hierarchical import hierarchical_kmeans
from pipeline.sampling.balanced import hierarchical_balanced_sampling


@dataclass
class Pool:
    x: np.ndarray  # (n, D) embeddings
    labels: np.ndarray  # (n,) int class ids
    is_copy: np.ndarray  # (n,) bool near-duplicate copy
    n_classes: int


def metrics(labels: np.ndarray, n_classes: int, is_copy: np.ndarray) -> dict[str, float]:
    counts = np.bincount(labels, minlength=n_classes)
    p = counts[counts > 0] / counts.sum()
    return {
        "entropy": float(-(p * np.log(p)).sum() / np.log(n_classes)),
        "classes": int((counts > 0).sum()),
        "min_class": int(counts.min()),
        "copy_share": float(is_copy.mean()),
    }


# ---- pools ------------------------------------------------------------------------------------------
def long_tail_pool(x: np.ndarray, labels: np.ndarray, seed: int) -> Pool:
    """Zipf class sizes 400 -> 10 over the 30 AID classes (largest sizes to the largest classes)."""
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    avail = np.bincount(labels, minlength=n_classes)
    a = np.log(40) / np.log(n_classes)
    want = np.round(400 * np.arange(1, n_classes + 1) ** -a).astype(int)
    order = np.lexsort((rng.random(n_classes), -avail))  # rank classes by availability, random ties
    keep = []
    for rank, c in enumerate(order):
        members = np.flatnonzero(labels == c)
        keep.append(rng.choice(members, size=min(want[rank], len(members)), replace=False))
    idx = np.concatenate(keep)
    return Pool(x[idx], labels[idx], np.zeros(len(idx), bool), n_classes)


IMAGE_SIZE = 160  # the input size of benchmarks.common.aid_embeddings; copies must match it


def near_duplicate_copies(ids: list[str], n_copies: int, seed: int = 0) -> np.ndarray:
    """Embeddings of ``n_copies`` random near-duplicates of every image id (cached)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from PIL import Image, ImageOps

    from pipeline.embed.embedder import Embedder

    path = CACHE / f"aid-copies-{len(ids)}x{n_copies}-s{seed}-{IMAGE_SIZE}px.npy"
    if path.exists():
        return np.load(path)
    table = ds.dataset(str(DATASETS / "aid150"), format="parquet").to_table(
        columns=["id", "image"], filter=pc.field("id").isin(ids)
    )
    by_id = dict(zip(table.column("id").to_pylist(), table.column("image").to_pylist()))
    rng = np.random.default_rng(seed)
    embedder = Embedder({"backbone": "efficientnet_lite0", "image_size": IMAGE_SIZE})
    blobs = []
    for i in ids:
        image = Image.open(io.BytesIO(by_id[i])).convert("RGB")
        w, h = image.size
        for _ in range(n_copies):
            im = image
            if rng.random() < 0.5:
                im = ImageOps.mirror(im)
            if rng.random() < 0.3:
                im = ImageOps.flip(im)
            s = rng.uniform(0.85, 0.97)
            cw, ch = int(w * s), int(h * s)
            ox, oy = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            im = im.crop((ox, oy, ox + cw, oy + ch)).resize((w, h), Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=int(rng.integers(50, 91)))
            blobs.append(buf.getvalue())
    t = time.time()
    out = np.concatenate([embedder.embed_bytes(blobs[a : a + 64]) for a in range(0, len(blobs), 64)])
    print(f"embedded {len(blobs)} copies in {time.time() - t:.0f}s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def redundancy_sources(per_class: int, heads: int, sources: int) -> tuple[dict[str, list[str]], list[str]]:
    """Fixed draw (seed 0) from the AID files: ``per_class`` ids per class, and the ``sources`` ids
    of each of ``heads`` head classes to copy. Independent of the embeddings table's row order."""
    import pyarrow.dataset as ds

    meta = ds.dataset(str(DATASETS / "aid150"), format="parquet").to_table(columns=["id", "label"])
    ids, names = np.asarray(meta.column("id").to_pylist()), np.asarray(meta.column("label").to_pylist())
    fixed = np.random.default_rng(0)
    classes = sorted(set(names))
    picked = {
        c: [str(i) for i in fixed.choice(np.sort(ids[names == c]), size=per_class, replace=False)] for c in classes
    }
    heads_ = fixed.choice(len(classes), size=heads, replace=False)
    return picked, [i for h in heads_ for i in picked[classes[h]][:sources]]


def redundancy_pool(
    x: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    seed: int,
    per_class: int = 30,
    heads: int = 3,
    sources: int = 30,
    copies: int = 15,
) -> Pool:
    """``per_class`` images of every class plus ``copies`` near-duplicates of ``sources`` images of
    ``heads`` head classes (fixed draw, so the copies are embedded once); ``seed`` shuffles the pool."""
    picked, src_ids = redundancy_sources(per_class, heads, sources)
    row = {str(i): r for r, i in enumerate(ids)}
    base = np.array([row[i] for c in sorted(picked) for i in picked[c]])
    src = np.array([row[i] for i in src_ids])
    copy_x = near_duplicate_copies(src_ids, copies)
    pool_x = np.concatenate([x[base], copy_x])
    pool_y = np.concatenate([labels[base], np.repeat(labels[src], copies)])
    is_copy = np.concatenate([np.zeros(len(base), bool), np.ones(len(copy_x), bool)])
    perm = np.random.default_rng(seed).permutation(len(pool_y))
    return Pool(pool_x[perm], pool_y[perm], is_copy[perm], int(labels.max()) + 1)


# ---- runs ------------------------------------------------------------------------------------------
def curate(pool: Pool, target: int, kcfg: dict, strategy: str, seed: int) -> np.ndarray:
    levels = hierarchical_kmeans(pool.x, {**kcfg, "seed": seed, "metric": "cosine"})
    sel = hierarchical_balanced_sampling(
        levels, target, strategy=strategy, multiplier=1, pick_level=1, allocation_power=0.0, rng=seed
    )
    return sel.indices


POINTS_PER_CLUSTER = 15  # level-1 k = pool / this (``--points-per-cluster``)
ONLY: list[str] | None = None  # ``--only``: subset of the configurations


def configs(n_pool: int) -> dict[str, tuple[dict, str]]:
    k1 = max(20, n_pool // POINTS_PER_CLUSTER)
    k2 = max(5, k1 // 5)
    k3 = max(3, k2 // 4)
    return {
        "flat k-means (1 level, 0 resampling)": (
            {"n_clusters": [k1], "n_iters": 20, "n_resampling_steps": [0]},
            "random",
        ),
        "1 level, 10 resampling steps": (
            {"n_clusters": [k1], "n_iters": 20, "n_resampling_steps": [10], "sample_size": [4]},
            "random",
        ),
        "2 levels, 0 resampling": ({"n_clusters": [k1, k2], "n_iters": 20, "n_resampling_steps": [0, 0]}, "random"),
        "2 levels, 10 resampling steps": (
            {"n_clusters": [k1, k2], "n_iters": 20, "n_resampling_steps": [10, 10], "sample_size": [4, 2]},
            "random",
        ),
        "3 levels, 10 resampling steps": (
            {"n_clusters": [k1, k2, k3], "n_iters": 20, "n_resampling_steps": [10, 10, 10], "sample_size": [4, 2, 2]},
            "random",
        ),
        "2 levels, 10 resampling, closest": (
            {"n_clusters": [k1, k2], "n_iters": 20, "n_resampling_steps": [10, 10], "sample_size": [4, 2]},
            "closest",
        ),
    }


def evaluate(name: str, make_pool, fraction: float, seeds: list[int]) -> dict:
    rows: dict[str, list[dict]] = {}
    info = {}
    for seed in seeds:
        pool = make_pool(seed)
        target = int(round(fraction * len(pool.labels)))
        info = {"pool": len(pool.labels), "target": target, "pool_copy_share": round(float(pool.is_copy.mean()), 3)}
        rnd = np.random.default_rng(seed).choice(len(pool.labels), size=target, replace=False)
        rows.setdefault("random", []).append(metrics(pool.labels[rnd], pool.n_classes, pool.is_copy[rnd]))
        for cname, (kcfg, strategy) in configs(len(pool.labels)).items():
            if ONLY and not any(o in cname for o in ONLY):
                continue
            t = time.perf_counter()
            idx = curate(pool, target, kcfg, strategy, seed)
            m = metrics(pool.labels[idx], pool.n_classes, pool.is_copy[idx])
            m["seconds"] = time.perf_counter() - t
            rows.setdefault(cname, []).append(m)
        print(f"{name} seed {seed} done", flush=True)
    table = {}
    for cname, ms in rows.items():
        table[cname] = {
            k: (round(float(np.mean([m[k] for m in ms])), 4), round(float(np.std([m[k] for m in ms])), 4))
            for k in ms[0]
        }
    return {"scenario": name, **info, "fraction": fraction, "seeds": seeds, "results": table}


def print_markdown(res: dict) -> None:
    base = res["results"]["random"]["entropy"][0]
    print(
        f"\n### {res['scenario']} (pool {res['pool']}, subset {res['target']}, copies in pool {res['pool_copy_share']:.0%})\n"
    )
    print("| method | norm. entropy | Δ vs random | classes | smallest class | copy share |")
    print("|---|---:|---:|---:|---:|---:|")
    for cname, r in res["results"].items():
        e, c, mn, cp = r["entropy"], r["classes"], r["min_class"], r["copy_share"]
        print(
            f"| {cname} | {e[0]:.3f} ± {e[1]:.3f} | {e[0] - base:+.3f} | {c[0]:.1f} ± {c[1]:.1f} | {mn[0]:.1f} ± {mn[1]:.1f} | {cp[0]:.3f} ± {cp[1]:.3f} |"
        )


def set_options(points_per_cluster: int, only: list[str] | None) -> None:
    global POINTS_PER_CLUSTER, ONLY
    POINTS_PER_CLUSTER, ONLY = points_per_cluster, only


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scenario", nargs="+", default=["long_tail", "redundancy"])
    ap.add_argument("--points-per-cluster", type=int, default=POINTS_PER_CLUSTER, help="level-1 k = pool size / this")
    ap.add_argument("--only", nargs="*", help="run only the configurations whose name contains one of these")
    ap.add_argument("--copies-only", action="store_true", help="only embed (and cache) the near-duplicates")
    args = ap.parse_args()
    set_options(args.points_per_cluster, args.only)
    if args.copies_only:
        near_duplicate_copies(redundancy_sources(30, 3, 30)[1], 15)
        return
    table, x = aid_embeddings(image_size=IMAGE_SIZE)
    names = np.asarray(table.column("label").to_pylist())
    classes, labels = np.unique(names, return_inverse=True)
    ids = np.asarray(table.column("id").to_pylist())
    seeds = list(range(args.seeds))
    print(machine(), x.shape, flush=True)
    out = []
    if "long_tail" in args.scenario:
        out.append(evaluate("long tail", lambda s: long_tail_pool(x, labels, s), 0.15, seeds))
    if "redundancy" in args.scenario:
        out.append(evaluate("redundancy", lambda s: redundancy_pool(x, labels, ids, s), 0.10, seeds))
    for res in out:
        print_markdown(res)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
