"""Dedup benchmark on AID: recall on injected near-duplicates, and curation of an inflated pool.

    .venv/bin/python -m benchmarks.dedup recall   # 300 injected copies (flip / crop / JPEG) in all 10,000 AID
    .venv/bin/python -m benchmarks.dedup curate   # head classes inflated by brightness + JPEG copies

recall: copies of 300 random AID images (100 horizontal flips, 100 crops of 88-95% of the side
resized back, 100 JPEG re-encodes at quality 40-75) are embedded with ``pipeline.embed.Embedder``
(same settings as ``benchmarks.common.aid_embeddings``) and added to the 10,000 AID embeddings.
A copy counts as found when it and its source end up with the same kept representative. "Matches
among originals" are AID images grouped with another AID image (AID holds real near-duplicates,
so these are not all false). Exact hashes cover the AID files and the copies.

curate: 100 images per class; in 3 head classes, 100 images get 5 copies each (brightness x U(0.8,
1.2), JPEG quality U(60, 90)), so heads hold 40% of the pool. 10% subsets: random, hierarchical
k-means + balanced sampling, and dedup -> k-means + balanced sampling. Label entropy in nats.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import pyarrow.dataset as ds
import torch
from PIL import Image, ImageEnhance, ImageOps

from benchmarks.common import CACHE, DATASETS, aid_embeddings, machine
from pipeline.dedup import find_duplicates, pixel_hash

EMBED = {"backbone": "efficientnet_lite0", "image_size": 160, "batch_size": 64}


def aid_meta() -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of AID sorted by id: copy sources are drawn from this, independent of row order."""
    t = ds.dataset(str(DATASETS / "aid150"), format="parquet").to_table(columns=["id", "label"]).sort_by("id")
    return np.asarray(t.column("id").to_pylist()), np.asarray(t.column("label").to_pylist())


RECALL_KINDS = ["flip"] * 100 + ["crop"] * 100 + ["jpeg"] * 100


def recall_copies() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(source ids, copy embeddings, copy hashes) of the 300 injected near-duplicates."""
    all_ids, _ = aid_meta()
    src_ids = np.random.default_rng(0).choice(all_ids, size=300, replace=False)
    return (src_ids, *embed_copies("injected-300", src_ids.tolist(), RECALL_KINDS, seed=0))


def inflated_copies() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(base ids: 100 per class, copy source ids, copy embeddings, copy hashes) of the inflated pool."""
    meta_ids, meta_labels = aid_meta()
    fixed = np.random.default_rng(1)
    classes = sorted(set(meta_labels))
    base_ids = np.concatenate([fixed.choice(meta_ids[meta_labels == c], 100, replace=False) for c in classes])
    heads = fixed.choice(len(classes), 3, replace=False)
    src_ids = np.repeat(np.concatenate([base_ids[h * 100 : (h + 1) * 100] for h in heads]), 5)
    return (
        base_ids,
        src_ids,
        *embed_copies("inflated-1500", src_ids.tolist(), ["brightness_jpeg"] * len(src_ids), seed=1),
    )


def aid_images() -> dict[str, bytes]:
    t = ds.dataset(str(DATASETS / "aid150"), format="parquet").to_table(columns=["id", "image"])
    return dict(zip(t.column("id").to_pylist(), t.column("image").to_pylist()))


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def transform(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    if kind == "flip":
        return _jpeg(ImageOps.mirror(im), 95)
    if kind == "crop":
        s = rng.uniform(0.88, 0.95)
        cw, ch = int(w * s), int(h * s)
        ox, oy = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        return _jpeg(im.crop((ox, oy, ox + cw, oy + ch)).resize((w, h), Image.Resampling.BILINEAR), 95)
    if kind == "jpeg":
        return _jpeg(im, int(rng.integers(40, 76)))
    if kind == "brightness_jpeg":
        return _jpeg(ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2)), int(rng.integers(60, 91)))
    raise ValueError(kind)


def embed_copies(name: str, sources: list[str], kinds: list[str], seed: int) -> tuple[np.ndarray, list[str]]:
    """(embeddings, pixel hashes) of ``transform(source, kind)``; cached under benchmarks/.cache."""
    path = CACHE / f"dedup-{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return z["x"], z["hashes"].tolist()
    from pipeline.embed import Embedder

    images = aid_images()
    rng = np.random.default_rng(seed)
    blobs = [transform(images[s], k, rng) for s, k in zip(sources, kinds)]
    t = time.time()
    emb = Embedder(EMBED)
    x = np.concatenate([emb.embed_bytes(blobs[a : a + 64]) for a in range(0, len(blobs), 64)])
    print(f"embedded {len(blobs)} copies in {time.time() - t:.0f}s", flush=True)
    hashes = [pixel_hash(b) for b in blobs]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, hashes=np.asarray(hashes))
    return x, hashes


def aid_hashes(ids: list[str]) -> list[str]:
    path = CACHE / "dedup-aid-pixel-hashes.json"
    if path.exists():
        cached = json.loads(path.read_text())
    else:
        cached = {i: pixel_hash(b) for i, b in aid_images().items()}
        path.write_text(json.dumps(cached))
    return [cached[i] for i in ids]


def bench_recall(eps_list: list[float]) -> dict:
    src_ids, copy_x, copy_hashes = recall_copies()
    kinds = RECALL_KINDS
    table, x = aid_embeddings()
    ids = table.column("id").to_pylist()
    row = {i: r for r, i in enumerate(ids)}
    src = np.array([row[i] for i in src_ids])
    pool = np.concatenate([x, copy_x])
    hashes = aid_hashes(ids) + copy_hashes
    n = len(ids)
    cos = np.einsum(
        "nd,nd->n",
        copy_x / np.linalg.norm(copy_x, axis=1, keepdims=True),
        x[src] / np.linalg.norm(x[src], axis=1, keepdims=True),
    )
    out: dict = {
        "pool": len(pool),
        "copies": 300,
        "copy_to_source_cosine": {
            k: [round(float(np.percentile(cos[np.array(kinds) == k], q)), 3) for q in (5, 50, 95)]
            for k in ("flip", "crop", "jpeg")
        },
        "by_eps": {},
    }
    pair = [ids.index("Industrial/industrial_203.jpg"), ids.index("Industrial/industrial_205.jpg")]
    for eps in eps_list:
        for label, extra in (("kmeans", {}), ("one_cluster", {"n_clusters": 1})):
            t = time.perf_counter()
            kept_of, sim, kind = find_duplicates(pool, hashes, {"eps": eps, "points_per_cluster": 1000, **extra})
            seconds = time.perf_counter() - t
            found = kept_of[n + np.arange(300)] == kept_of[src]
            grouped = np.flatnonzero((kind[:n] > 0) & (kept_of[:n] < n))
            row = {
                "recall": round(float(found.mean()), 3),
                **{
                    f"recall_{k}": round(float(found[np.array(kinds) == k].mean()), 3) for k in ("flip", "crop", "jpeg")
                },
                "matches_among_originals": int(len(grouped)),
                "known_pair_found": bool(kept_of[pair[0]] == kept_of[pair[1]]),
                "known_pair_kind": ["kept", "exact", "semantic"][int(kind[pair].max())],
                "removed": int((kind > 0).sum()),
                "seconds": round(seconds, 1),
            }
            out["by_eps"][f"{eps}/{label}"] = row
            print(eps, label, row, flush=True)
    return out


def entropy(labels: np.ndarray) -> float:
    _, c = np.unique(labels, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def bench_curate(seeds: int, eps: float, points_per_cluster: int = 15, n_levels: int = 2) -> dict:
    """Curate with and without dedup; level-1 k = pool / ``points_per_cluster``, ``n_levels`` levels."""
    from pipeline.kmeans import hierarchical_kmeans
    from pipeline.sampling import hierarchical_balanced_sampling

    base_ids, src_ids, copy_x, copy_hashes = inflated_copies()
    classes = sorted(set(aid_meta()[1]))
    table, x = aid_embeddings()
    ids = np.asarray(table.column("id").to_pylist())
    labels = np.asarray(table.column("label").to_pylist())
    row = {i: r for r, i in enumerate(ids)}
    base = np.array([row[i] for i in base_ids])
    src5 = np.array([row[i] for i in src_ids])
    pool_x = np.concatenate([x[base], copy_x])
    pool_y = np.concatenate([labels[base], labels[src5]])
    is_copy = np.concatenate([np.zeros(len(base), bool), np.ones(len(src5), bool)])
    hashes = aid_hashes(ids[base].tolist()) + copy_hashes
    target = len(pool_y) // 10
    rows: dict[str, list] = {"random": [], "dedup+random": [], "kmeans+balanced": [], "dedup+kmeans+balanced": []}

    def curate(idx: np.ndarray, seed: int) -> np.ndarray:
        k1 = max(20, len(idx) // points_per_cluster)
        kcfg = {
            "n_clusters": [k1, max(5, k1 // 5)][:n_levels],
            "n_iters": 20,
            "n_resampling_steps": [10, 10][:n_levels],
            "sample_size": [4, 2][:n_levels],
            "metric": "cosine",
            "seed": seed,
        }
        levels = hierarchical_kmeans(pool_x[idx], kcfg)
        return idx[hierarchical_balanced_sampling(levels, target, strategy="random", rng=seed).indices]

    t = time.perf_counter()
    kept_of, _, kind = find_duplicates(pool_x, hashes, {"eps": eps, "points_per_cluster": 1000})
    dedup_s = time.perf_counter() - t
    kept = np.flatnonzero(kind == 0)
    for seed in range(seeds):
        picks = {
            "random": np.random.default_rng(seed).choice(len(pool_y), target, replace=False),
            "dedup+random": np.random.default_rng(seed).choice(kept, target, replace=False),
            "kmeans+balanced": curate(np.arange(len(pool_y)), seed),
            "dedup+kmeans+balanced": curate(kept, seed),
        }
        for name, idx in picks.items():
            rows[name].append(
                {
                    "entropy": entropy(pool_y[idx]),
                    "copy_share": float(is_copy[idx].mean()),
                    "classes": len(set(pool_y[idx])),
                }
            )
    res = {
        name: {
            k: [round(float(np.mean([r[k] for r in rs])), 4), round(float(np.std([r[k] for r in rs])), 4)]
            for k in rs[0]
        }
        for name, rs in rows.items()
    }
    return {
        "pool": len(pool_y),
        "copies": int(is_copy.sum()),
        "target": target,
        "eps": eps,
        "seeds": seeds,
        "points_per_cluster": points_per_cluster,
        "levels": n_levels,
        "max_entropy": round(float(np.log(len(classes))), 4),
        "dedup_seconds": round(dedup_s, 1),
        "dedup_removed_copies": int((kind[is_copy] > 0).sum()),
        "dedup_removed_originals": int((kind[~is_copy] > 0).sum()),
        "results": res,
    }


def bench_prepare() -> None:
    aid_hashes(aid_meta()[0].tolist())
    recall_copies()
    inflated_copies()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["recall", "curate", "prepare"])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2])  # the BENCHMARKS.md table
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--points-per-cluster", type=int, default=15, help="curate: level-1 k = pool size / this")
    ap.add_argument("--levels", type=int, default=2, choices=[1, 2], help="curate: k-means levels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "prepare":  # build the caches (copies' embeddings, AID pixel hashes) only
        bench_prepare()
        return
    res = (
        bench_recall(args.eps)
        if args.part == "recall"
        else bench_curate(args.seeds, args.eps[0], args.points_per_cluster, args.levels)
    )
    res["machine"] = machine()
    print(json.dumps(res, indent=2))
    (CACHE / f"dedup-{args.part}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
