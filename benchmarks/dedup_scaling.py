"""How ``strata curate`` grows with the collection when copy detection is on (issue 27).

A collection of small images on disk (``--side`` px JPEGs: smooth random colour fields, distinct
from each other) of which ``--copy-rate`` are copies of another image of the collection
(re-encoded at another JPEG quality, flipped, or downscaled), given as embeddings made elsewhere: a
Parquet with ``key``, ``vector`` (64 floats; a copy's vector is its source's plus a little noise)
and ``uri``. ``strata curate`` imports it (taking each image's copy signatures on Ray: the only
decode of the collection), dedups (exact + near duplicates, calibrated threshold), clusters at a
fixed k, samples and writes the report. Each size is a fresh run directory; the time is the whole
process's wall clock, with each step's time from ``run.json``.

    .venv/bin/python -m benchmarks.dedup_scaling prepare --sizes 20000 80000
    flock /tmp/strata-bench.lock .venv/bin/python -m benchmarks.dedup_scaling curate --sizes 20000 80000
    flock /tmp/strata-bench.lock .venv/bin/python /work/shared/tools/growth.py --sizes 10000 20000 40000 -- \
        .venv/bin/python -m benchmarks.dedup_scaling import --n {n} --out import.jsonl

``--override dedup.near_duplicate=false`` times everything but the copy search (exact dedup still
reads the stored pixel hashes). ``import`` times the import step alone (signatures included, ``embed.engine=ray``) on a prepared
collection, for ``growth.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from benchmarks.common import CACHE, REPO

DIM = 64
K = 64  # kmeans.n_clusters at level 1 (fixed: the target compares sizes at fixed k)


def collection_dir(n: int, side: int, copy_rate: float, seed: int) -> Path:
    return CACHE / f"dedup_scaling-{n}-{side}px-{copy_rate:g}-{seed}"


def _original(rng: np.random.Generator, side: int) -> Image.Image:
    cells = int(rng.integers(6, 13))
    noise = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((side, side), Image.Resampling.BICUBIC)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def prepare(n: int, side: int, copy_rate: float, seed: int) -> Path:
    """Write the collection once (cached): ``images/<shard>/<i>.jpg``, ``vectors.parquet`` and
    ``truth.parquet`` (``key``, ``source``: the original a copy was made from, -1 for originals)."""
    root = collection_dir(n, side, copy_rate, seed)
    if (root / "vectors.parquet").exists():
        return root
    rng = np.random.default_rng(seed)
    n_copies = int(round(copy_rate * n))
    n_orig = n - n_copies
    source = np.concatenate([np.full(n_orig, -1), rng.integers(0, n_orig, n_copies)])
    order = rng.permutation(n)  # copies scattered through the collection, not at its end
    source = source[order]
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)  # where each pre-permutation item ended up
    source = np.where(source >= 0, position[np.maximum(source, 0)], -1)
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    originals: dict[int, Image.Image] = {}
    for key in np.argsort(source >= 0, kind="stable"):  # originals first: copies need their source
        if source[key] < 0:
            img = originals[int(key)] = _original(rng, side)
            blob = _jpeg(img, 90)
        else:
            img = originals[int(source[key])]
            kind = int(rng.integers(3))
            if kind == 1:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            elif kind == 2:
                img = img.resize((side * 3 // 4, side * 3 // 4), Image.Resampling.BILINEAR)
            blob = _jpeg(img, int(rng.integers(60, 85)))
        path = tmp / "images" / f"{key // 1000:04d}" / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    uris = [str(root / "images" / f"{k // 1000:04d}" / f"{k}.jpg") for k in range(n)]
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    copies = source >= 0
    x[copies] = x[source[copies]] + 0.05 * rng.normal(size=(copies.sum(), DIM)).astype(np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)
    pq.write_table(pa.table({"key": np.arange(n), "vector": vec, "uri": uris}), tmp / "vectors.parquet")
    pq.write_table(pa.table({"key": np.arange(n), "source": source}), tmp / "truth.parquet")
    tmp.rename(root)
    return root


def _overrides(root: Path, run_dir: Path) -> list[str]:
    return [
        f"input.path={root / 'vectors.parquet'}",
        "input.format=embeddings",
        "input.id_column=key",
        "input.embedding_column=vector",
        f"run_dir={run_dir}",
        f"kmeans.n_clusters=[{K},8]",
        "sample.target_size=2000",
        "seed=0",
    ]


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def curate(sizes: list[int], side: int, copy_rate: float, seed: int, out: Path | None, extra: list[str]) -> list[dict]:
    rows = []
    for n in sizes:
        root = prepare(n, side, copy_rate, seed)
        tag = f"-{zlib.crc32(' '.join(extra).encode()):08x}" if extra else ""
        run_dir = CACHE / f"dedup_scaling-run-{n}{tag}"
        shutil.rmtree(run_dir, ignore_errors=True)
        before = load()
        t0 = time.perf_counter()
        cmd = [str(REPO / ".venv/bin/strata"), "curate", *_overrides(root, run_dir), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit(f"n={n}: strata curate failed:\n{proc.stderr[-3000:]}")
        record = json.loads((run_dir / "run.json").read_text())
        dedup = record["counts"]["dedup"]
        truth = pq.read_table(root / "truth.parquet")
        copies = int((truth.column("source").to_numpy() >= 0).sum())
        removed = pq.read_table(run_dir / "dedup" / "duplicates.parquet")
        source = dict(zip(map(str, truth.column("key").to_pylist()), truth.column("source").to_pylist()))
        true_removed = sum(source[i] >= 0 for i in removed.column("id").to_pylist())
        row = {
            "n": n,
            "wall_s": round(wall, 1),
            "steps_s": record.get("timings", {}),
            "load_before": before,
            "load_after": load(),
            "copies": copies,
            "removed": removed.num_rows,
            "removed_true_copies": int(true_removed),
            "dedup": {k: dedup.get(k) for k in ("exact", "near_duplicate", "decode_s", "total_s")},
            "copy_calibration": {
                k: (dedup.get("copies") or {}).get(k) for k in ("threshold", "candidate_pairs", "pairs_s")
            },
            "signatures": record["counts"]["embed"].get("signatures"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        print(f"ratio wall {b['n']}/{a['n']}: {b['wall_s'] / a['wall_s']:.2f}x (target <= 4.8x for 4x the images)")
        for step in b["steps_s"]:
            if a["steps_s"].get(step):
                print(
                    f"  {step}: {a['steps_s'][step]:.1f} s -> {b['steps_s'][step]:.1f} s ({b['steps_s'][step] / a['steps_s'][step]:.2f}x)"
                )
    if out:
        out.write_text(json.dumps(rows, indent=1))
    return rows


def import_only(n: int, side: int, copy_rate: float, seed: int, out: Path | None) -> None:
    """The import step alone (copy signatures on Ray), for ``growth.py``."""
    from benchmarks.common import ensure_ray
    from pipeline.config import load_group
    from pipeline.embed.stage import run_embed
    from pipeline.rundir import RunDir

    root = prepare(n, side, copy_rate, seed)
    run_dir = CACHE / f"dedup_scaling-import-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    ensure_ray()
    cfg = {
        **load_group("input/default"),
        "path": str(root / "vectors.parquet"),
        "format": "embeddings",
        "id_column": "key",
        "embedding_column": "vector",
    }
    t0 = time.perf_counter()
    counts = run_embed(RunDir(str(run_dir)), cfg, {"engine": "ray"})
    seconds = round(time.perf_counter() - t0, 2)
    line = json.dumps({"n": n, "import_s": seconds, "signatures": counts["signatures"], "load": load()})
    print(line)
    if out:  # growth.py discards stdout: append the line here too
        with out.open("a") as fh:
            fh.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("prepare", "curate", "import"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000])
    parser.add_argument("--n", type=int, help="import: the collection's size")
    parser.add_argument("--side", type=int, default=48)
    parser.add_argument("--copy-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--override", nargs="*", default=[], help="curate: extra overrides (dedup.near_duplicate=false)"
    )
    parser.add_argument("--out", type=Path, help="curate: JSON of the rows; import: a file to append its line to")
    args = parser.parse_args()
    if args.mode == "prepare":
        for n in args.sizes:
            t0 = time.perf_counter()
            print(prepare(n, args.side, args.copy_rate, args.seed), f"{time.perf_counter() - t0:.0f} s")
    elif args.mode == "curate":
        curate(args.sizes, args.side, args.copy_rate, args.seed, args.out, args.override)
    else:
        import_only(args.n, args.side, args.copy_rate, args.seed, args.out)


if __name__ == "__main__":
    main()
