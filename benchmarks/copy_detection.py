"""Copy detection (dedup near_duplicate, issue 27): precision / recall on several domains, and scale.

    .venv/bin/python -m benchmarks.copy_detection quality [--collections digits shapes ...] [--size 1000]
    .venv/bin/python -m benchmarks.copy_detection scale --n 1000000 [--set nprobe=8 engine=ray ...]
    .venv/bin/python -m benchmarks.copy_detection step --n 20000      # one size, for tools/growth.py

quality: per collection, two pools of default-settings dedup (``find_duplicates``, exact +
near_duplicate, calibrated):

- copy-free: ``size`` originals, no copies: share removed (target <= 1%);
- copy-heavy: the same originals, 40% of them with one copy per transform kind (6 each: JPEG
  quality 20-75, resize to 30-90% of the side, crop keeping 90-99% of each side, flip, rot90,
  colour; ``benchmarks.dedup.transform``, independent of the calibration's own transforms), so
  2.4 x size copies = 70.6% of the pool. precision = removals whose kept image shows the same
  picture / removals (>= 0.97); recall = copies that end with their source's representative
  (>= 0.90, per kind too); lost = pictures none of whose images is kept (<= 1%).

Collections (>= 2 not aerial): ``digits`` (sklearn's 1,797 8x8 grey digits upscaled to 56 px, JPEG),
``shapes`` (generated: 3-5 random ellipses / rectangles / triangles of 8-32 px on a plain or
gradient background, 64 px, JPEG), ``tiles`` (sklearn's two sample photos cut into non-overlapping 40 px
tiles), ``ucmerced`` and ``aid150`` (aerial, ../shared/datasets), and ``glyphs`` (held out: 1-3
letters of PIL's default font on a plain page, 48 px grey; added after the method was designed, as
a check of transfer).

scale: candidate search + verification on synthetic signatures: ``n`` grey grids made of smooth
random fields (12 x 12 noise upsampled to 32 x 32, bicubic), 10% of them copies of others
(additive noise sigma 6, brightness x U(0.8, 1.2), a random D4 symmetry); no calibration (the
threshold is fixed at a typical calibrated value, ``--threshold``, and pairs are registered above
``--min-corr`` descriptor correlation, the lowest synthetic copy's on the collections measured), as
the calibration costs a fixed sample, not a share of N.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import numpy as np
import yaml
from PIL import Image, ImageDraw

from benchmarks.common import machine
from benchmarks.dedup import COPY_KINDS, dataset, transform
from pipeline.dedup.hashing import image_signatures
from pipeline.dedup.run import KINDS, find_duplicates


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def digits() -> list[bytes]:
    from sklearn.datasets import load_digits

    grey = (load_digits().images * (255 / 16)).astype(np.uint8)
    return [_jpeg(Image.fromarray(g).resize((56, 56), Image.Resampling.BILINEAR).convert("RGB")) for g in grey]


def shapes(n: int = 2000, side: int = 64, seed: int = 0) -> list[bytes]:
    """3-5 random ellipses / rectangles / triangles (8-32 px) in random colours on a plain or
    gradient background: simple objects, each picture its own layout."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, side)[:, None, None] * rng.integers(0, 2)
        bg = (c0 * (1 - ramp) + c1 * ramp) * np.ones((side, side, 3))
        im = Image.fromarray(bg.astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 6))):
            w, h = rng.integers(8, 33, 2)
            x0, y0 = rng.integers(0, side - w + 1), rng.integers(0, side - h + 1)
            x1, y1 = x0 + w, y0 + h
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = int(rng.integers(3))
            if kind == 0:
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif kind == 1:
                draw.rectangle((x0, y0, x1, y1), fill=fill)
            else:
                draw.polygon([(x0, y1), (x1, y1), (int(rng.integers(x0, x1 + 1)), y0)], fill=fill)
        out.append(_jpeg(im))
    return out


def glyphs(n: int = 2000, side: int = 48, seed: int = 7) -> list[bytes]:
    """Held-out domain (never used while designing or tuning): 1-3 random letters / digits of PIL's
    default font (12-30 px, random grey ink) on a plain grey page, 48 px grey JPEG: small, grey,
    simple shapes, many pictures differing by one stroke."""
    from PIL import ImageFont

    rng = np.random.default_rng(seed)
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    for _ in range(n):
        paper = int(rng.integers(0, 256))
        im = Image.new("L", (side, side), paper)
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 4))):
            font = ImageFont.load_default(size=int(rng.integers(12, 31)))
            ink = int((paper + rng.integers(80, 176)) % 256)
            xy = (int(rng.integers(-4, side - 8)), int(rng.integers(-6, side - 10)))
            draw.text(xy, str(rng.choice(list(chars))), fill=ink, font=font)
        out.append(_jpeg(im.convert("RGB")))
    return out


def tiles(side: int = 40) -> list[bytes]:
    from sklearn.datasets import load_sample_images

    out = []
    for photo in load_sample_images().images:
        h, w = photo.shape[0] // side, photo.shape[1] // side
        for y in range(h):
            for x in range(w):
                out.append(_jpeg(Image.fromarray(photo[y * side : (y + 1) * side, x * side : (x + 1) * side])))
    return out


COLLECTIONS = {
    "digits": digits,
    "shapes": shapes,
    "tiles": tiles,
    "glyphs": glyphs,
    "ucmerced": lambda: dataset("ucmerced")[1],
    "aid150": lambda: dataset("aid150")[1],
}


def dedup(images: list[bytes]):
    t = time.perf_counter()
    found = find_duplicates(
        None, {"seed": 0}, signatures=image_signatures(images), load=lambda rows: [images[r] for r in rows]
    )
    return found, time.perf_counter() - t


def evaluate(found, picture: np.ndarray, kinds: np.ndarray) -> dict:
    """picture: (n,) which original each row shows; kinds: (n,) '' for originals, else the copy kind."""
    removed = np.flatnonzero(found.kind > 0)
    kept_of = found.kept_of
    correct = picture[removed] == picture[kept_of[removed]]
    originals = np.flatnonzero(kinds == "")
    src_of = originals[np.searchsorted(picture[originals], picture)]  # row of each row's original
    copy_rows = np.flatnonzero(kinds != "")
    found_copy = kept_of[copy_rows] == kept_of[src_of[copy_rows]]
    kept_pictures = np.unique(picture[found.kind == 0])
    out = {
        "pool": len(picture),
        "copies": int(len(copy_rows)),
        "removed": int(len(removed)),
        "removed_share": round(len(removed) / len(picture), 4),
        "by_kind": {KINDS[c]: int((found.kind == c).sum()) for c in range(1, len(KINDS))},
        "precision": round(float(correct.mean()), 4) if len(removed) else None,
        "false_removals": int((~correct).sum()),
        "recall": round(float(found_copy.mean()), 4) if len(copy_rows) else None,
        "recall_by_kind": {k: round(float(found_copy[kinds[copy_rows] == k].mean()), 3) for k in COPY_KINDS}
        if len(copy_rows)
        else None,
        "pictures_lost": int(len(originals) - len(kept_pictures)),
        "pictures_lost_share": round(1 - len(kept_pictures) / len(originals), 4),
    }
    return out


def bench_quality(names: list[str], size: int, seed: int = 0) -> dict:
    out = {}
    for name in names:
        images = COLLECTIONS[name]()
        rng = np.random.default_rng(seed)
        base = np.sort(rng.choice(len(images), size=min(size, len(images)), replace=False))
        originals = [images[b] for b in base]
        n = len(originals)
        found, seconds = dedup(originals)
        free = evaluate(found, np.arange(n), np.full(n, "", dtype=object))
        out[f"{name}/copy-free"] = {**free, "seconds": round(seconds, 1), "copies_record": found.calibration}
        print(name, "copy-free", {k: v for k, v in out[f"{name}/copy-free"].items()}, flush=True)
        src = np.sort(rng.choice(n, size=int(round(0.4 * n)), replace=False))
        kinds = np.tile(np.array(COPY_KINDS, dtype=object), len(src))
        srcs = np.repeat(src, len(COPY_KINDS))
        pool = originals + [transform(originals[s], k, rng) for s, k in zip(srcs, kinds)]
        picture = np.concatenate([np.arange(n), srcs])
        found, seconds = dedup(pool)
        heavy = evaluate(found, picture, np.concatenate([np.full(n, "", dtype=object), kinds]))
        out[f"{name}/copy-heavy"] = {**heavy, "seconds": round(seconds, 1), "copies_record": found.calibration}
        print(name, "copy-heavy", out[f"{name}/copy-heavy"], flush=True)
    return out


def synthetic_grids(n: int, copy_share: float = 0.1, seed: int = 0) -> np.ndarray:
    """(n, 32, 32) uint8 smooth random grids, ``copy_share`` of them noisy / brighter / D4 copies of others."""
    from pipeline.dedup.perceptual import d4

    rng = np.random.default_rng(seed)
    n_copies = int(n * copy_share)
    base = n - n_copies
    grids = np.empty((n, 32, 32), np.uint8)
    for a in range(0, base, 65536):
        m = min(65536, base - a)
        small = rng.random((m, 1, 12, 12), dtype=np.float32)
        t = __import__("torch")
        up = t.nn.functional.interpolate(t.from_numpy(small), size=(32, 32), mode="bicubic", align_corners=False)
        grids[a : a + m] = np.clip(up[:, 0].numpy() * 255, 0, 255).astype(np.uint8)
    src = rng.integers(0, base, n_copies)
    for a in range(0, n_copies, 65536):
        s = src[a : a + 65536]
        sym = rng.integers(0, 8, len(s))
        g = d4(grids[s])[np.arange(len(s)), sym].astype(np.float32)
        g = g * rng.uniform(0.8, 1.2, (len(s), 1, 1)) + rng.normal(0, 6, g.shape)
        grids[base + a : base + a + len(s)] = np.clip(g, 0, 255).astype(np.uint8)
    return grids


def bench_scale(n: int, threshold: float, min_corr: float, overrides: dict) -> dict:
    """Candidate search + verification of ``n`` synthetic signatures (module doc), each phase timed."""
    import os
    import resource

    from pipeline.dedup.candidates import candidate_pairs
    from pipeline.dedup.config import dedup_config
    from pipeline.dedup.copies import descriptor_correlation, sharded_copy_scores
    from pipeline.dedup.perceptual import d4_phash, descriptors
    from pipeline.engine import BY_NAME, choose_engine

    load_before = os.getloadavg()

    def phase(name: str, since: float) -> None:  # a run stopped by a timeout still shows how far it got
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"scale n={n}: {name} {time.perf_counter() - since:.1f} s, load {os.getloadavg()[0]:.1f}, peak {rss:.1f} GiB",
            flush=True,
        )

    t0 = time.perf_counter()
    grids = synthetic_grids(n)
    t1 = time.perf_counter()
    hashes = d4_phash(grids)
    desc = descriptors(grids)
    t2 = time.perf_counter()
    phase("grids, hashes, descriptors", t0)
    cfg = {**dedup_config({"copies": overrides})["copies"], "seed": 0}
    if choose_engine(str(cfg["engine"]), n, int(cfg["local_max_images"]), what="dedup.copies") == "ray":
        import ray

        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)  # its own
        t2 = time.perf_counter()  # Ray's start-up is not the step's
    stats: dict = {}
    i, j = candidate_pairs(hashes, desc, cfg, stats)
    t3 = time.perf_counter()
    phase(f"candidate search ({stats}, {len(i)} pairs)", t2)
    register = descriptor_correlation(desc, i, j) >= min_corr
    engine = BY_NAME[stats["engine"]]
    bits, residual = sharded_copy_scores(hashes, grids, i, j, np.zeros(len(i), bool), engine=engine)
    t4 = time.perf_counter()
    phase("direct verification", t3)
    reg = np.flatnonzero(register)  # = min(direct, registered), timed apart
    bits[reg], residual[reg] = sharded_copy_scores(
        hashes, grids, i[reg], j[reg], register[reg], shard=4096, engine=engine
    )
    t5 = time.perf_counter()
    phase(f"registration of {len(reg)} pairs", t4)
    base = n - int(n * 0.1)
    copies_found = np.zeros(n, bool)
    link = residual <= threshold
    copies_found[j[link & (j >= base)]] = True
    return {
        "n": n,
        "make_s": round(t1 - t0, 1),
        "hash_desc_s": round(t2 - t1, 1),
        "search_s": round(t3 - t2, 1),
        "direct_s": round(t4 - t3, 1),
        "register_s": round(t5 - t4, 1),
        "verify_s": round(t5 - t3, 1),
        "search_verify_s": round(t5 - t2, 1),
        "pairs": int(len(i)),
        "registered_pairs": int(len(reg)),
        "register_min_correlation": min_corr,
        **stats,
        "threshold": threshold,
        "settings": {k: cfg[k] for k in ("flat_max", "nprobe", "list_size", "engine", "neighbours")},
        "copies_linked_share": round(float(copies_found[base:].mean()), 4),
        "load_before": [round(v, 1) for v in load_before],
        "load_after": [round(v, 1) for v in os.getloadavg()],
        "machine": machine(),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["quality", "scale", "step"])
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--threshold", type=float, default=0.6)
    ap.add_argument("--min-corr", type=float, default=0.8)
    ap.add_argument("--set", nargs="*", default=[], help="dedup.copies overrides, key=value (flat_max=20000 nprobe=8)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.mode == "quality":
        res = {"machine": machine(), **bench_quality(args.collections, args.size)}
    else:
        overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
        res = bench_scale(args.n, args.threshold, args.min_corr, overrides)
        print(json.dumps(res), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1, default=str)
