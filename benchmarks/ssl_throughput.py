"""Pretraining throughput: ``strata pretrain`` with 1 Ray Train worker vs a plain lightly loop.

Both sides train the same SimCLR model (``pipeline.ssl.build_model``), batch size, resolution,
augmentation (lightly ``SimCLRTransform``, satellite preset) and torch thread count on the same
AID images, in one process run: plain, Ray, plain again (the machine is shared, so the plain
number is the mean of the runs around the Ray one). The plain loop is the lightly tutorial loop:
a ``torch.utils.data.DataLoader`` (``num_workers=0``, single process) over the encoded images,
decoding + the two-view transform in ``__getitem__``, then forward/backward/step.

Ray's workers run at the plain loop's priority (``RAY_worker_niceness=0``; Ray's default is nice
15, which on a shared, oversubscribed machine measures the scheduler, not the code).

Images/s is steady state: the mean over epochs after the first (first epoch = warm-up).

    .venv/bin/python -m benchmarks.ssl_throughput [--images 2048 --epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from benchmarks.common import CACHE, DATASETS, machine


def plain_lightly_loop(config: dict, images: list[bytes], epochs: int) -> list[float]:
    """Images/s per epoch of a single-process lightly training loop."""
    from pipeline.io.images import decode_rgb
    from pipeline.ssl.optim import build_optimizer, scaled_lr
    from pipeline.ssl.train import build_model
    from pipeline.ssl.transforms import build_two_view_transform

    ssl, train = config["ssl"], config["train"]
    torch.set_num_threads(int(train["torch_threads"]))
    torch.manual_seed(config["seed"])
    transform = build_two_view_transform(ssl["augment"], ssl["image_size"], ssl["mean"], ssl["std"])

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            return transform(decode_rgb(images[i], draft_size=2 * ssl["image_size"]))

    loader = torch.utils.data.DataLoader(
        Images(), batch_size=train["batch_size"], shuffle=True, drop_last=True, num_workers=0
    )
    model = build_model(ssl)
    optimizer = build_optimizer(
        model.parameters(), **{**ssl["optimizer"], "lr": scaled_lr(ssl["optimizer"]["lr"], train["batch_size"])}
    )
    rates = []
    for _ in range(epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        for view0, view1 in loader:
            loss = model(view0, view1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(view0)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--shuffle", default="block", choices=["global", "block", "none"])
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from benchmarks.common import REPO
    from jobs._config import to_dict
    from pipeline.ssl.train import pretrain

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "pretrain",
            overrides=[
                "ssl=simclr",
                "ssl/augment=satellite",
                f"ssl.image_size={args.image_size}",
                "ssl.backbone.blocks_per_stage=1",
                f"train.epochs={args.epochs}",
                f"train.batch_size={args.batch_size}",
                f"train.torch_threads={args.torch_threads}",
                "train.num_workers=1",
                "train.cpus_per_worker=1",
                "train.warmup_epochs=0",
                f"train.shuffle={args.shuffle}",
            ],
        )
    table = pq.read_table(sorted((DATASETS / "aid150").glob("part-*.parquet"))[0], columns=["id", "image"])
    # Every 2nd row of the first shard: several classes, fixed set.
    table = table.take(np.arange(0, 2 * args.images, 2) % table.num_rows)
    images = table.column("image").to_pylist()
    config = {"ssl": to_dict(cfg.ssl), "train": to_dict(cfg.train), "seed": 0}

    import os

    import ray

    from benchmarks.ssl_knn import init_local_ray

    # Ray runs its workers at nice 15 by default; on a shared, oversubscribed machine that alone
    # starves them next to the nice-0 plain loop. Same priority for both sides.
    os.environ.setdefault("RAY_worker_niceness", "0")

    init_local_ray(object_store_memory=int(1e9))

    plain_before = plain_lightly_loop(config, images, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = pretrain({**config, "run_dir": tmp}, ray.data.from_arrow(table).repartition(8))
        ray_wall = time.perf_counter() - start
    ray_rates = [h["images_per_s"] for h in result.history]
    plain_after = plain_lightly_loop(config, images, args.epochs)

    steady = lambda rates: float(np.mean(rates[1:] if len(rates) > 1 else rates))  # noqa: E731
    plain = 0.5 * (steady(plain_before) + steady(plain_after))
    record = {
        "machine": machine(),
        "images": len(images),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "torch_threads": args.torch_threads,
        "ray_worker_niceness": os.environ["RAY_worker_niceness"],
        "shuffle": args.shuffle,
        "backbone": config["ssl"]["backbone"],
        "plain_images_per_s": [round(r, 1) for r in plain_before + plain_after],
        "ray_images_per_s": [round(r, 1) for r in ray_rates],
        "ray_wall_s_including_startup": round(ray_wall, 1),
        "plain_steady": round(plain, 1),
        "ray_steady": round(steady(ray_rates), 1),
        "ratio_ray_over_plain": round(steady(ray_rates) / plain, 3),
    }
    print(json.dumps(record, indent=1))
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "ssl_throughput.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
