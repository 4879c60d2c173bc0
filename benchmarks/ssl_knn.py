"""kNN evaluation of self-supervised pretraining on AID (labels used only for evaluation).

1. Split ``../shared/datasets/aid150`` (10,000 images, 30 classes) into train / held-out by a
   hash of the image id (``crc32(id) % 5 == 0`` -> held out, about 20%).
2. ``pipeline.ssl.pretrain`` (Ray Train, the same code as ``strata pretrain``) on the train
   images only, labels unused.
3. Embed train and held-out images with the frozen backbone through the embed stage's
   ``Embedder`` (resize to the training size, checkpoint's mean/std, L2-normalised), and the
   same backbone with random weights (same seed) as the baseline.
4. kNN classifier, k=20, cosine similarity: the held-out label is the majority label of its 20
   most similar train images (ties to the larger summed similarity).

    .venv/bin/python -m benchmarks.ssl_knn --epochs 12 [--method simclr] [--augment satellite]
"""

from __future__ import annotations

import argparse
import json
import time
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.common import CACHE, DATASETS, machine


def held_out_mask(ids: list[str], folds: int = 5) -> np.ndarray:
    """True for the held-out images: ``crc32(id) % folds == 0`` (stable across runs and machines)."""
    return np.array([zlib.crc32(i.encode()) % folds == 0 for i in ids])


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 20
) -> float:
    """Accuracy of a k-nearest-neighbour vote under cosine similarity (rows L2-normalised here)."""
    a = torch.nn.functional.normalize(torch.from_numpy(train_x), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(test_x), dim=1)
    classes, train_codes = np.unique(train_y, return_inverse=True)
    sims, idx = (b @ a.T).topk(k, dim=1)
    labels = torch.from_numpy(train_codes)[idx]
    votes = torch.zeros(len(b), len(classes)).scatter_add_(1, labels, torch.ones_like(sims))
    votes += 1e-3 * torch.zeros_like(votes).scatter_add_(1, labels, sims) / k  # similarity breaks ties
    predicted = classes[votes.argmax(1).numpy()]
    return float((predicted == test_y).mean())


def embed(module: torch.nn.Module, meta: dict, images: list[bytes]) -> np.ndarray:
    from pipeline.backbones import Backbone
    from pipeline.embed.embedder import Embedder

    backbone = Backbone(
        module.eval(), int(meta["dim"]), tuple(meta["mean"]), tuple(meta["std"]), int(meta["image_size"])
    )
    return Embedder({"batch_size": 256, "num_threads": 2}, backbone=backbone).embed_bytes(images)


def init_local_ray(object_store_memory: int, attempts: int = 4) -> None:
    """Local 2-CPU Ray; retried because a raylet can fail to register on an overloaded shared machine."""
    import ray

    for attempt in range(attempts):
        if ray.is_initialized():
            return
        try:
            ray.init(
                address="local",
                num_cpus=2,
                object_store_memory=object_store_memory,
                include_dashboard=False,
                log_to_driver=False,
            )
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on start-up timeouts
            print(f"ray.init failed (attempt {attempt + 1}/{attempts}): {exc}", flush=True)
            ray.shutdown()
            time.sleep(10)
    if not ray.is_initialized():
        raise RuntimeError("could not start a local Ray instance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="simclr", choices=["simclr", "simsiam"])
    parser.add_argument("--augment", default="satellite")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--blocks-per-stage", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None, help="base lr at batch 256 (default: the method's)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(CACHE / "ssl_knn"))
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir

    from benchmarks.common import REPO
    from jobs._config import to_dict
    from pipeline.backbones import build_ssl_backbone
    from pipeline.ssl.checkpoint import load_backbone
    from pipeline.ssl.train import pretrain

    overrides = [
        f"ssl={args.method}",
        f"ssl/augment={args.augment}",
        f"ssl.image_size={args.image_size}",
        "ssl.backbone.name=small_cnn",
        f"ssl.backbone.width={args.width}",
        f"ssl.backbone.blocks_per_stage={args.blocks_per_stage}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        f"train.torch_threads={args.torch_threads}",
        f"train.name=knn-{int(time.time())}",
    ]
    if args.lr is not None:
        overrides.append(f"ssl.optimizer.lr={args.lr}")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("pretrain", overrides=overrides)
    config = {"ssl": to_dict(cfg.ssl), "train": to_dict(cfg.train), "seed": args.seed, "run_dir": args.out}

    table = pa.concat_tables(
        pq.read_table(p, columns=["id", "label", "image"]) for p in sorted((DATASETS / "aid150").glob("part-*.parquet"))
    )
    ids = table.column("id").to_pylist()
    test = held_out_mask(ids)
    print(f"AID: {len(ids)} images, {int((~test).sum())} train / {int(test.sum())} held out")

    import ray

    init_local_ray(object_store_memory=int(1.5e9))  # the train images (~120 MB) and their shuffle

    train_rows = table.filter(pa.array(~test)).select(["id", "image"])
    dataset = ray.data.from_arrow(train_rows).repartition(16)
    start = time.perf_counter()
    result = pretrain(config, dataset)
    train_time = time.perf_counter() - start

    images, labels = table.column("image").to_pylist(), np.asarray(table.column("label").to_pylist())
    module, dim, meta = load_backbone(result.checkpoint)
    ssl_x = embed(module, meta, images)
    torch.manual_seed(args.seed)
    options = dict(config["ssl"]["backbone"])
    random_module, _ = build_ssl_backbone(options.pop("name"), **options)
    random_x = embed(random_module, meta, images)

    acc_ssl = knn_accuracy(ssl_x[~test], labels[~test], ssl_x[test], labels[test])
    acc_random = knn_accuracy(random_x[~test], labels[~test], random_x[test], labels[test])
    total = time.perf_counter() - start
    record = {
        "machine": machine(),
        "method": args.method,
        "augment": args.augment,
        "backbone": config["ssl"]["backbone"],
        "image_size": args.image_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "knn_k": 20,
        "knn_acc_ssl": acc_ssl,
        "knn_acc_random_init": acc_random,
        "pretrain_wall_s": train_time,
        "total_wall_s": total,
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()} for h in result.history],
    }
    print(json.dumps(record, indent=1))
    with open(CACHE / "ssl_knn.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
