"""Dedup benchmark: copy detection with injected copies, removals on pools of distinct images, curation.

    .venv/bin/python -m benchmarks.dedup copies   # AID + 600 injected copies; distinct pools (AID, UC Merced, grey 64 px)
    .venv/bin/python -m benchmarks.dedup curate   # head classes inflated by brightness + JPEG copies (semantic mode)

copies: 600 random AID images get one copy each, 100 per transform kind, made here independently of
the calibration's own transforms (pipeline.dedup.calibration) with the ranges of issue #16:
JPEG quality 20-75; resize to 30-90% of the side; crop keeping 90-99% of each side at a random
offset; flip left-right or up-down; rotation by 90, 180 or 270 degrees; colour (brightness 0.6-1.4,
contrast 0.8-1.25, saturation 0.5-1.5). The pool (10,600 images) is deduplicated with the default
settings (``conf/dedup/default.yaml``: exact + near_duplicate, calibrated threshold, semantic off).

- recall of a kind: share of its copies that end up with the same representative as their source;
- precision of a kind: share of the removals involving a copy of that kind (as the removed image or
  as its kept image) whose two images are the same picture;
- overall precision: correct removals / all removals, where a removal between two AID originals is
  correct only if the pair is in ``AID_REAL_COPIES`` (inspected by eye, listed below).

Pools of distinct images (no injected copies): AID (10,000), UC Merced (2,100) and both turned into
small grey photos (64 x 64 px, grey, JPEG q85): the removed fraction, the calibrated threshold, and on
UC Merced whether the pixel-identical pair airplane01/airplane02 is found.

curate: 100 images per class; in 3 head classes, 100 images get 5 copies each (brightness x U(0.8,
1.2), JPEG quality U(60, 90)), so heads hold 40% of the pool. 10% subsets: random, hierarchical
k-means + balanced sampling, and dedup (``semantic``, eps) -> k-means + balanced sampling.
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
from pipeline.dedup.hashing import image_signatures, pixel_hash
from pipeline.dedup.run import KINDS, find_duplicates

EMBED = {"backbone": "efficientnet_lite0", "image_size": 160, "batch_size": 64}
COPY_KINDS = ("jpeg", "resize", "crop", "flip", "rot90", "colour")
# AID originals that are the same picture (found by this benchmark, checked by eye): byte-identical
# (README), identical content re-saved, and overlapping captures of one scene shifted by a few pixels.
AID_REAL_COPIES = {
    frozenset(p)
    for p in (
        ("Industrial/industrial_203.jpg", "Industrial/industrial_205.jpg"),
        ("Port/port_183.jpg", "Port/port_248.jpg"),
        ("RailwayStation/railwaystation_221.jpg", "RailwayStation/railwaystation_234.jpg"),
    )
}


def dataset(name: str) -> tuple[list[str], list[bytes], np.ndarray]:
    """(ids sorted, encoded images, labels) of a shared dataset."""
    t = ds.dataset(str(DATASETS / name), format="parquet").to_table(columns=["id", "image", "label"]).sort_by("id")
    return t.column("id").to_pylist(), t.column("image").to_pylist(), np.asarray(t.column("label").to_pylist())


def _jpeg(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def transform(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    if kind == "jpeg":
        return _jpeg(im, int(rng.integers(20, 76)))
    if kind == "resize":
        s = rng.uniform(0.3, 0.9)
        return _jpeg(im.resize((max(8, int(w * s)), max(8, int(h * s))), Image.Resampling.BILINEAR), 90)
    if kind == "crop":
        cw, ch = int(w * rng.uniform(0.90, 0.99)), int(h * rng.uniform(0.90, 0.99))
        ox, oy = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        return _jpeg(im.crop((ox, oy, ox + cw, oy + ch)), 90)
    if kind == "flip":
        return _jpeg(ImageOps.mirror(im) if rng.random() < 0.5 else ImageOps.flip(im), 90)
    if kind == "rot90":
        return _jpeg(im.transpose([Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][int(rng.integers(3))]), 90)  # fmt: skip
    if kind == "colour":
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.25))
        return _jpeg(ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.5)), 90)
    if kind == "brightness_jpeg":
        return _jpeg(ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2)), int(rng.integers(60, 91)))
    if kind == "grey64":
        return _jpeg(im.convert("L").resize((64, 64), Image.Resampling.LANCZOS), 85)
    raise ValueError(kind)


def dedup(images: list[bytes]) -> tuple[object, float]:
    """Default-settings dedup of encoded images (signatures decoded here, as the step does from uris)."""
    t = time.perf_counter()
    found = find_duplicates(
        None, {"seed": 0}, signatures=image_signatures(images), load=lambda rows: [images[r] for r in rows]
    )
    return found, time.perf_counter() - t


def bench_copies() -> dict:
    ids, images, _ = dataset("aid150")
    n = len(ids)
    rng = np.random.default_rng(0)
    src = rng.choice(n, size=100 * len(COPY_KINDS), replace=False)
    kinds = np.repeat(COPY_KINDS, 100)
    pool = images + [transform(images[s], k, rng) for s, k in zip(src, kinds)]
    found, seconds = dedup(pool)
    group = np.concatenate([np.arange(n), src])  # the picture each pool row shows
    name = ids + [f"copy:{k}:{ids[s]}" for s, k in zip(src, kinds)]
    removed = np.flatnonzero(found.kind > 0)
    kept_of = found.kept_of

    def correct(r: int) -> bool:
        a, b = r, int(kept_of[r])
        return group[a] == group[b] or frozenset((name[a], name[b])) in AID_REAL_COPIES

    ok = np.array([correct(r) for r in removed], dtype=bool)
    per_kind = {}
    for k in COPY_KINDS:
        rows = n + np.flatnonzero(kinds == k)
        involved = np.isin(removed, rows) | np.isin(kept_of[removed], rows)
        per_kind[k] = {
            "recall": round(float((kept_of[rows] == kept_of[src[kinds == k]]).mean()), 3),
            "precision": round(float(ok[involved].mean()), 3) if involved.any() else None,
        }
    among_originals = [
        (name[r], name[kept_of[r]], int(found.distance[r]))
        for r in removed
        if r < n and kept_of[r] < n and group[r] != group[kept_of[r]]
    ]
    return {
        "pool": len(pool),
        "copies": len(src),
        "seconds": round(seconds, 1),
        "calibration": found.calibration,
        "removed": int(len(removed)),
        "by_kind": {KINDS[c]: int((found.kind == c).sum()) for c in range(1, len(KINDS))},
        "precision": round(float(ok.mean()), 4),
        "recall": round(float(np.mean([kept_of[n + c] == kept_of[s] for c, s in enumerate(src)])), 4),
        "per_kind": per_kind,
        "false_removals": int((~ok).sum()),
        "removed_between_originals": among_originals,
    }


def bench_distinct() -> dict:
    out = {}
    for name in ("ucmerced", "aid150"):
        ids, images, _ = dataset(name)
        for variant in ("original", "grey64"):
            pool = images if variant == "original" else [transform(b, "grey64", None) for b in images]
            found, seconds = dedup(pool)
            removed = np.flatnonzero(found.kind > 0)
            row = {
                "pool": len(pool),
                "removed": int(len(removed)),
                "removed_fraction": round(len(removed) / len(pool), 4),
                "by_kind": {KINDS[c]: int((found.kind == c).sum()) for c in range(1, len(KINDS))},
                "threshold": found.calibration["threshold"],
                "calibration": found.calibration,
                "pairs": [
                    (ids[r], ids[found.kept_of[r]], KINDS[found.kind[r]], int(found.distance[r])) for r in removed
                ],
                "seconds": round(seconds, 1),
            }
            if name == "ucmerced":
                a, b = ids.index("airplane/airplane01.tif"), ids.index("airplane/airplane02.tif")
                row["airplane01_02_found"] = bool(found.kept_of[a] == found.kept_of[b])
            out[f"{name}/{variant}"] = row
            print(name, variant, {k: v for k, v in row.items() if k != "pairs"}, flush=True)
    return out


# ---- curate (semantic mode on an inflated pool; embeddings from benchmarks.common) ----------------
def aid_meta() -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of AID sorted by id: copy sources are drawn from this, independent of row order."""
    t = ds.dataset(str(DATASETS / "aid150"), format="parquet").to_table(columns=["id", "label"]).sort_by("id")
    return np.asarray(t.column("id").to_pylist()), np.asarray(t.column("label").to_pylist())


def inflated_copies() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(base ids: 100 per class, copy source ids, copy embeddings, copy hashes) of the inflated pool."""
    meta_ids, meta_labels = aid_meta()
    fixed = np.random.default_rng(1)
    classes = sorted(set(meta_labels))
    base_ids = np.concatenate([fixed.choice(meta_ids[meta_labels == c], 100, replace=False) for c in classes])
    heads = fixed.choice(len(classes), 3, replace=False)
    src_ids = np.repeat(np.concatenate([base_ids[h * 100 : (h + 1) * 100] for h in heads]), 5)
    return (base_ids, src_ids, *embed_copies("inflated-1500", src_ids.tolist(), seed=1))


def embed_copies(name: str, sources: list[str], seed: int) -> tuple[np.ndarray, list[str]]:
    """(embeddings, pixel hashes) of brightness + JPEG copies of ``sources``; cached under benchmarks/.cache."""
    path = CACHE / f"dedup-{name}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=False)
        return z["x"], z["hashes"].tolist()
    from pipeline.embed.embedder import Embedder

    ids, images, _ = dataset("aid150")
    by_id = dict(zip(ids, images))
    rng = np.random.default_rng(seed)
    blobs = [transform(by_id[s], "brightness_jpeg", rng) for s in sources]
    emb = Embedder(EMBED)
    x = np.concatenate([emb.embed_bytes(blobs[a : a + 64]) for a in range(0, len(blobs), 64)])
    hashes = [pixel_hash(b) for b in blobs]
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, hashes=np.asarray(hashes))
    return x, hashes


def entropy(labels: np.ndarray) -> float:
    _, c = np.unique(labels, return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def bench_curate(seeds: int, eps: float, points_per_cluster: int = 15, n_levels: int = 2) -> dict:
    """Curate with and without semantic dedup; level-1 k = pool / ``points_per_cluster``, ``n_levels`` levels."""
    from pipeline.kmeans.hierarchical import hierarchical_kmeans
    from pipeline.sampling.balanced import hierarchical_balanced_sampling

    base_ids, src_ids, copy_x, copy_hashes = inflated_copies()
    table, x = aid_embeddings()
    ids = np.asarray(table.column("id").to_pylist())
    labels = np.asarray(table.column("label").to_pylist())
    row = {i: r for r, i in enumerate(ids)}
    base = np.array([row[i] for i in base_ids])
    src5 = np.array([row[i] for i in src_ids])
    pool_x = np.concatenate([x[base], copy_x])
    pool_y = np.concatenate([labels[base], labels[src5]])
    is_copy = np.concatenate([np.zeros(len(base), bool), np.ones(len(src5), bool)])
    all_ids, images, _ = dataset("aid150")
    by_id = dict(zip(all_ids, images))
    hashes = [pixel_hash(by_id[i]) for i in ids[base]] + copy_hashes
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
        return idx[
            hierarchical_balanced_sampling(
                levels, target, strategy="random", multiplier=1, pick_level=1, allocation_power=0.0, rng=seed
            ).indices
        ]

    t = time.perf_counter()
    cfg = {"near_duplicate": False, "semantic": True, "eps": eps, "keep": "centroid", "seed": 0}
    kind = find_duplicates(pool_x, cfg, pixel_hashes=hashes).kind
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
        "max_entropy": round(float(np.log(len(set(labels)))), 4),
        "dedup_seconds": round(dedup_s, 1),
        "dedup_removed_copies": int((kind[is_copy] > 0).sum()),
        "dedup_removed_originals": int((kind[~is_copy] > 0).sum()),
        "results": res,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["copies", "curate"])
    ap.add_argument("--eps", type=float, default=0.15, help="curate: semantic eps")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--points-per-cluster", type=int, default=15, help="curate: level-1 k = pool size / this")
    ap.add_argument("--levels", type=int, default=2, choices=[1, 2], help="curate: k-means levels")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.part == "copies":
        res = {"injected": bench_copies()}
        print(json.dumps(res["injected"], indent=2), flush=True)
        res["distinct"] = bench_distinct()
    else:
        res = bench_curate(args.seeds, args.eps, args.points_per_cluster, args.levels)
    res["machine"] = machine()
    print(json.dumps(res, indent=2))
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / f"dedup-{args.part}.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
