"""Images/s of the Ray Data embedding stage vs a plain single-process torch loop.

Same images (UC Merced from ../shared/datasets), same model and input size, same total threads:
the plain loop decodes and runs the forward pass with ``torch.set_num_threads(T)`` in one process;
Ray runs ``T`` actors with one torch thread each (``embed.pool_size=T``). Both include reading the
Parquet shards and decoding; model construction is excluded from the plain loop and included for
Ray (actor start-up), which favours the plain loop. Target: Ray >= 0.9x the plain loop.

    python -m benchmarks.embed --images 1050 --threads 2 --image-size 224
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import DATASETS, ensure_ray, machine


def plain_loop(input_cfg: dict, embed_cfg: dict, threads: int) -> tuple[float, int]:
    import torch

    from pipeline.embed import Embedder
    from pipeline.io.images import RejectedImage
    from pipeline.io.sources import iter_images

    embedder = Embedder({**embed_cfg, "num_threads": threads})
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    n = 0
    for batch in iter_images(input_cfg):
        pixels = []
        for data in batch.column("image").to_pylist():
            try:
                pixels.append(embedder.decode(data))
            except RejectedImage:
                pass
        n += len(embedder.embed_arrays(np.stack(pixels)))
    return time.perf_counter() - t0, n


def ray_data(input_cfg: dict, embed_cfg: dict, threads: int) -> tuple[float, int]:
    import ray

    from pipeline.embed import EmbedConfig, embed_dataset
    from pipeline.io.sources import read_images

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    cfg = EmbedConfig.from_dict({**embed_cfg, "num_threads": 1, "pool_size": threads})
    t0 = time.perf_counter()
    n = sum(len(b["id"]) for b in embed_dataset(read_images(input_cfg), cfg).iter_batches(batch_size=None, batch_format="pyarrow"))
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1050)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="alternate plain/Ray this many times; report the best of each")
    args = ap.parse_args()
    ensure_ray(num_cpus=args.threads)
    input_cfg = {"path": str(DATASETS / "ucmerced"), "limit": args.images, "rows_per_unit": 64}
    embed_cfg = {"image_size": args.image_size, "batch_size": args.batch_size}
    plain, ray_ = [], []
    for _ in range(args.repeats):
        t, n_plain = plain_loop(input_cfg, embed_cfg, args.threads)
        plain.append(n_plain / t)
        t, n_ray = ray_data(input_cfg, embed_cfg, args.threads)
        ray_.append(n_ray / t)
        assert n_plain == n_ray == args.images, (n_plain, n_ray)
    result = {
        "machine": machine(),
        "images": args.images,
        "image_size": args.image_size,
        "threads": args.threads,
        "plain_images_per_s": [round(v, 1) for v in plain],
        "ray_images_per_s": [round(v, 1) for v in ray_],
        "ratio_best": round(max(ray_) / max(plain), 3),
        "target": ">= 0.9",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
