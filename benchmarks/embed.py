"""Images/s of the Ray Data embedding stage vs a plain single-process torch loop.

Same images (a dataset from ../shared/datasets), same work per image (the same ``EmbedStage``:
decode, pixel hash, resize, normalise, EfficientNet-Lite0 forward), same total threads: the plain
loop calls the stage in one process with ``torch.set_num_threads(T)``; Ray runs ``T`` actors with
one torch thread each (``embed.pool_size=T``). Both include reading the Parquet shards.

The plain loop's clock starts after its model is built and torch is imported. Ray's clock starts
when the dataset is executed, so it also pays a one-off start-up (each actor process imports
``ray.data`` and torch, ~7 s of CPU, then builds the model). Reported per side and size:
``end_to_end`` (images / total seconds) and ``first_output_s`` (seconds to the first output block).

With two or more ``--images`` sizes it also reports the *marginal* rate of each side
(extra images / extra seconds between the smallest and largest run), which is the per-image
cost without any fixed start-up, and Ray's fixed start-up in seconds.
Ratios are Ray / plain. Target: Ray >= 0.9x the plain loop.

    python -m benchmarks.embed --dataset aid150 --images 2000,10000 --threads 2 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import DATASETS, ensure_ray, machine


def _summary(marks: list[tuple[float, int]]) -> dict[str, float]:
    """(seconds since start, rows) per output block -> throughput numbers."""
    n = sum(m for _, m in marks)
    return {
        "images": n,
        "seconds": round(marks[-1][0], 2),
        "first_output_s": round(marks[0][0], 2),
        "end_to_end": round(n / marks[-1][0], 2),
    }


def plain_loop(input_cfg: dict, embed_cfg: dict, threads: int) -> dict[str, float]:
    import torch

    from pipeline.embed.stage import EmbedStage
    from pipeline.io.sources import iter_images

    stage = EmbedStage({**embed_cfg, "num_threads": threads})
    stage.setup()
    stage._ready = True
    torch.set_num_threads(threads)
    marks = []
    t0 = time.perf_counter()
    for batch in iter_images(input_cfg):
        out = stage(batch)
        marks.append((time.perf_counter() - t0, out.num_rows))
    return _summary(marks)


def ray_data(input_cfg: dict, embed_cfg: dict, threads: int) -> dict[str, float]:
    import ray

    from pipeline.embed.config import EmbedConfig
    from pipeline.embed.stage import embed_dataset
    from pipeline.io.sources import read_images

    ray.data.DataContext.get_current().execution_options.preserve_order = True
    cfg = EmbedConfig.from_dict({**embed_cfg, "num_threads": 1, "pool_size": threads})
    marks = []
    t0 = time.perf_counter()
    for b in embed_dataset(read_images(input_cfg), cfg).iter_batches(batch_size=None, batch_format="pyarrow"):
        marks.append((time.perf_counter() - t0, b.num_rows))
    return _summary(marks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ucmerced", help="folder under ../shared/datasets")
    ap.add_argument(
        "--images",
        default="1050",
        help="comma-separated image counts (first N images); two or more give the marginal rate",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rows-per-unit", type=int, default=128, help="rows per read unit = per Ray Data block")
    ap.add_argument(
        "--read-tasks",
        type=int,
        default=None,
        help="input.read_tasks (concurrent read tasks; default: Ray Data decides)",
    )
    args = ap.parse_args()
    ensure_ray(num_cpus=args.threads)
    embed_cfg = {"image_size": args.image_size, "batch_size": args.batch_size}
    runs = []
    for n in [int(v) for v in args.images.split(",")]:
        input_cfg = {
            "path": str(DATASETS / args.dataset),
            "limit": n,
            "rows_per_unit": args.rows_per_unit,
            "units_per_block": 1,
            "read_tasks": args.read_tasks,
        }
        plain = plain_loop(input_cfg, embed_cfg, args.threads)
        ray_ = ray_data(input_cfg, embed_cfg, args.threads)
        assert plain["images"] == ray_["images"], (plain, ray_)
        runs.append(
            {
                "images": plain["images"],
                "plain": plain,
                "ray": ray_,
                "ratio_end_to_end": round(ray_["end_to_end"] / plain["end_to_end"], 3),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "machine": machine(),
        "dataset": args.dataset,
        "image_size": args.image_size,
        "threads": args.threads,
        "runs": runs,
        "target": ">= 0.9",
    }
    if len(runs) > 1:
        a, b = runs[0], runs[-1]
        dn = b["images"] - a["images"]
        marginal = {side: round(dn / (b[side]["seconds"] - a[side]["seconds"]), 2) for side in ("plain", "ray")}
        result["marginal_images_per_s"] = marginal
        result["ratio_marginal"] = round(marginal["ray"] / marginal["plain"], 3)
        # Ray's fixed start-up: its time at the smaller size minus what the marginal rate predicts.
        result["ray_startup_s"] = round(a["ray"]["seconds"] - a["images"] / marginal["ray"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
