"""Self-supervised pretraining on Ray Train: the per-worker loop and the driver that runs it.

Config (plain dict, see ``conf/pretrain.yaml`` and ``conf/ssl/``)::

    seed: 0
    run_dir: runs/x                    # metrics.json and the exported checkpoint go here
    ssl:   {method, backbone: {name, ...}, image_size, mean, std, head: {...},
            augment: {kind, ...}, optimizer: {name, lr, momentum, weight_decay}, sync_batchnorm}
    train: {epochs, batch_size (per worker), warmup_epochs, max_steps_per_epoch, num_workers,
            cpus_per_worker, use_gpu, amp, torch_threads, prefetch_batches, shuffle,
            local_shuffle_buffer, storage_path, name, checkpoints_to_keep}

Learning rate per step: ``warmup_cosine(t, T, W, scaled_lr(lr, batch_size * world_size))``.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.artifacts import PRETRAIN_METRICS, PRETRAIN_RAY
from pipeline.atomic import atomic_path
from pipeline.backbones import build_ssl_backbone
from pipeline.config import with_defaults
from pipeline.engine import ensure_ray
from pipeline.malloc import keep_freed_memory
from pipeline.progress import Progress
from pipeline.ssl.checkpoint import read_checkpoint, save_checkpoint
from pipeline.ssl.methods import build_ssl_model
from pipeline.ssl.optim import build_optimizer, scaled_lr, warmup_cosine
from pipeline.ssl.transforms import TwoViewCollate

log = logging.getLogger(__name__)
STORE_KEYS = ("store", "resolution", "product")  # model-store registration settings of the ssl group


def build_model(ssl: dict[str, Any], distributed: bool = False) -> nn.Module:
    """SimCLR/SimSiam model (backbone + heads + loss) described by the ``ssl`` config group."""
    options = dict(ssl["backbone"])
    backbone, dim = build_ssl_backbone(options.pop("name"), **options)
    return build_ssl_model(ssl["method"], backbone, dim, ssl.get("head"), distributed=distributed)


def checkpoint_meta(ssl: dict[str, Any], model: nn.Module, epoch: int, history: list[dict]) -> dict[str, Any]:
    """What :func:`pipeline.ssl.load_backbone` and the embed stage need to rebuild and feed the backbone."""
    dim = model.projection_head.layers[0].in_features
    return {
        "method": ssl["method"],
        "backbone": dict(ssl["backbone"]),
        "dim": int(dim),
        "head": dict(ssl.get("head") or {}),
        "image_size": int(ssl["image_size"]),
        "mean": list(ssl["mean"]),
        "std": list(ssl["std"]),
        "epoch": epoch,
        "history": history,
    }


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    view0: torch.Tensor,
    view1: torch.Tensor,
    lr: float,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimisation step at learning rate ``lr``; returns the (detached) loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(view0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = model(view0, view1)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: resume from the latest checkpoint, train, report + checkpoint every epoch."""
    import ray.train
    import ray.train.torch as rtt

    ssl, train = config["ssl"], with_defaults("trainer/default", config["train"], passthrough=("die_after_epoch",))
    torch.set_num_threads(int(train["torch_threads"]))
    keep_freed_memory()  # the same activations every step: no page faults per step (pipeline.malloc)
    ctx = ray.train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    device = rtt.get_device()
    torch.manual_seed(int(config["seed"]))

    model = build_model(ssl, distributed=world > 1)
    if world > 1 and ssl["sync_batchnorm"] and device.type == "cuda":
        # SimCLR/SimSiam normalise over the global batch; torch's SyncBatchNorm is CUDA-only.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    start_epoch, history, state = 0, [], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state, meta = read_checkpoint(directory)
        model.load_state_dict(state["model"])
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
    model = rtt.prepare_model(model)
    raw_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    optimizer = build_optimizer(model.parameters(), **ssl["optimizer"])
    if state is not None and state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])

    amp_dtype = torch.float16 if train["amp"] and device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is not None else None
    if scaler is not None and state is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])

    batch_size, steps_per_epoch = int(train["batch_size"]), int(config["steps_per_epoch"])
    total_steps, warmup_steps = train["epochs"] * steps_per_epoch, int(train["warmup_epochs"] * steps_per_epoch)
    peak_lr = scaled_lr(ssl["optimizer"]["lr"], batch_size * world)
    shard = ray.train.get_dataset_shard("train")
    run = _run_dir(config) if rank == 0 else None
    bar = Progress("ssl/epochs", int(train["epochs"]), run=run, unit="epoch", stream=sys.stderr if rank == 0 else None)
    if start_epoch:
        bar.update(start_epoch, resumed=start_epoch)

    for epoch in range(start_epoch, int(train["epochs"])):
        _maybe_die(train, epoch, rank)
        model.train()
        collate = TwoViewCollate(
            ssl["augment"], int(ssl["image_size"]), ssl["mean"], ssl["std"], seed=int(config["seed"]), epoch=epoch
        )
        batches = shard.iter_torch_batches(
            batch_size=batch_size,
            collate_fn=collate,
            drop_last=True,
            prefetch_batches=int(train["prefetch_batches"]),
            local_shuffle_buffer_size=int(train["local_shuffle_buffer"]) or None,
            local_shuffle_seed=int(config["seed"]) * 1000 + epoch * world + rank
            if train["local_shuffle_buffer"]
            else None,
        )
        loss_sum, steps, lr = torch.zeros((), device=device), 0, 0.0
        start = time.perf_counter()
        for view0, view1 in batches:
            lr = warmup_cosine(epoch * steps_per_epoch + steps, total_steps, warmup_steps, peak_lr)
            view0, view1 = view0.to(device, non_blocking=True), view1.to(device, non_blocking=True)
            loss_sum += train_step(model, optimizer, view0, view1, lr, scaler, amp_dtype)
            steps += 1
            if steps >= steps_per_epoch:
                break
        if steps < steps_per_epoch:
            raise RuntimeError(f"worker {rank} got {steps} batches in epoch {epoch}, expected {steps_per_epoch}")
        elapsed = time.perf_counter() - start
        if world > 1:
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= world
        metrics = {
            "epoch": epoch + 1,
            "loss": float(loss_sum) / steps,
            "lr": lr,
            "steps": steps,
            "images_per_s": world * steps * batch_size / elapsed,
            "epoch_time_s": elapsed,
            "rejected": collate.rejected,
            "resumed_from_epoch": start_epoch,
        }
        history.append(metrics)
        bar.update(loss=round(metrics["loss"], 4), images_per_s=round(metrics["images_per_s"], 1))
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                extra = {"scaler": scaler.state_dict()} if scaler is not None else None
                save_checkpoint(tmp, raw_model, checkpoint_meta(ssl, raw_model, epoch + 1, history), optimizer, extra)
                if run is not None:
                    run.write_json(PRETRAIN_METRICS, history)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
    bar.close()


def _maybe_die(train: dict[str, Any], epoch: int, rank: int) -> None:
    """Fault injection for tests: ``train.die_after_epoch: {epoch: N, marker: PATH}`` kills worker
    ``rank`` 0 once (``os._exit``, like an OOM kill) when it starts the epoch after ``N``, the first time only."""
    spec = train.get("die_after_epoch") or {}
    if rank == 0 and spec and int(spec["epoch"]) == epoch and not os.path.exists(spec["marker"]):
        with open(spec["marker"], "w") as fh:
            fh.write(f"killed after epoch {epoch}\n")
        time.sleep(
            float(spec.get("delay_s", 0))
        )  # a real death comes mid-epoch, after Ray Train polled the last report
        os._exit(1)


def _run_dir(config: dict[str, Any]):
    from pipeline.rundir import RunDir

    return RunDir(config["run_dir"]) if config.get("run_dir") else None


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


@dataclass
class PretrainResult:
    """Where the final checkpoint is and the per-epoch metrics."""

    checkpoint: str
    history: list[dict]


def prepare_dataset(dataset):
    """Keep ``id`` and ``image``; drop rows whose bytes could not be read."""
    import pyarrow.compute as pc

    def readable(batch):
        if "_read_error" in batch.column_names:
            batch = batch.filter(pc.is_null(batch["_read_error"]))
        return batch.select(["id", "image"])

    return dataset.map_batches(readable, batch_format="pyarrow", num_cpus=0.25)


def pretrain(config: dict[str, Any], dataset, export_dir: str | None = None) -> PretrainResult:
    """Run SimCLR/SimSiam on ``dataset`` (Ray Dataset with ``id``, ``image`` bytes) with a ``TorchTrainer``.

    Resumes from the latest checkpoint under ``train.storage_path/train.name`` when one exists;
    copies the final checkpoint to ``export_dir`` (default ``<run_dir>/pretrain/checkpoint``).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    train = with_defaults("trainer/default", config["train"], passthrough=("die_after_epoch",))
    world, batch_size = int(train["num_workers"]), int(train["batch_size"])
    if world < 1 or batch_size < 2:
        raise ValueError(f"need train.num_workers >= 1 and train.batch_size >= 2, got {world}, {batch_size}")
    dataset = prepare_dataset(dataset)
    rows = dataset.count()
    # Sources list images class by class or folder by folder; batches need a mix. "global" is a full
    # all-to-all shuffle every epoch; "block" (streaming, cheap) shuffles block order and then rows
    # within each worker's local buffer.
    shuffle = {True: "global", False: "none"}.get(train["shuffle"], train["shuffle"])
    if shuffle == "global":
        dataset = dataset.random_shuffle(seed=int(config["seed"]))
    elif shuffle == "block":
        dataset = dataset.randomize_block_order(seed=int(config["seed"]))
        train["local_shuffle_buffer"] = max(int(train["local_shuffle_buffer"]), 8 * batch_size)
    elif shuffle != "none":
        raise ValueError(f"train.shuffle must be global, block or none, got {train['shuffle']!r}")
    steps = (rows // world) // batch_size
    if train["max_steps_per_epoch"]:
        steps = min(steps, int(train["max_steps_per_epoch"]))
    if steps < 1:
        raise ValueError(f"{rows} readable images are too few for {world} worker(s) x batch_size {batch_size}")
    run_dir = config.get("run_dir")
    storage = train["storage_path"] or os.path.join(run_dir or ".", str(PRETRAIN_RAY))
    loop_config = {
        **config,
        "train": train,
        "steps_per_epoch": steps,
        "run_dir": _absolute(run_dir) if run_dir else None,
    }
    backend = train["backend"] or ("nccl" if train["use_gpu"] else "gloo")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=world,
            use_gpu=bool(train["use_gpu"]),
            resources_per_worker={"CPU": float(train["cpus_per_worker"]), **({"GPU": 1} if train["use_gpu"] else {})},
        ),
        run_config=ray.train.RunConfig(
            storage_path=_absolute(storage),
            name=train["name"],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=int(train["checkpoints_to_keep"])),
            # a dead or unhealthy worker restarts the group from the latest epoch checkpoint
            failure_config=ray.train.FailureConfig(max_failures=int(train["max_failures"])),
        ),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("pretraining finished without a checkpoint")
    target = export_dir or os.path.join(run_dir or ".", "pretrain", "checkpoint")
    with result.checkpoint.as_directory() as directory, atomic_path(target) as tmp:
        shutil.copytree(directory, tmp)
    _, meta = read_checkpoint(target)
    return PretrainResult(checkpoint=target, history=meta["history"])


def run_pretrain(
    run, input_cfg: dict[str, Any], ssl: dict[str, Any], train: dict[str, Any], seed: int = 0, force: bool = False
) -> dict[str, Any]:
    """The ``pretrain`` step of a run directory (``strata pretrain`` and ``strata curate`` call this).

    Skipped when it finished with the same config and input files; otherwise trains (resuming
    from the latest Ray Train checkpoint under ``<run_dir>/pretrain/ray``), exports the final
    checkpoint to ``<run_dir>/pretrain/checkpoint`` and records the step. Returns its result,
    whose ``checkpoint`` (the exported folder) is what ``embed.checkpoint`` takes.
    """
    from pipeline.artifacts import PRETRAIN_CHECKPOINT, input_fingerprint
    from pipeline.io.sources import InputConfig, read_images
    from pipeline.rundir import INPUT

    registry = {k: ssl.get(k) for k in STORE_KEYS}
    ssl = {k: v for k, v in ssl.items() if k not in STORE_KEYS}  # where it is registered does not change training
    config = copy.deepcopy(
        {"ssl": ssl, "train": train, "seed": int(seed), "input": {k: v for k, v in input_cfg.items() if k != "path"}}
    )
    inputs = {INPUT: input_fingerprint(InputConfig.from_dict(input_cfg).resolved_path)}
    with run.step("pretrain", config, inputs, force=force) as step:
        if step.skipped:
            return {**step.result, "checkpoint": run.path(PRETRAIN_CHECKPOINT)}
        train_config = {"ssl": ssl, "train": train, "seed": int(seed), "run_dir": run.root}
        ensure_ray()  # Ray Train: a job that deferred its local Ray starts it now
        result = pretrain(train_config, read_images(input_cfg), export_dir=run.local(PRETRAIN_CHECKPOINT))
        last = result.history[-1]
        step.result = {"epochs": last["epoch"], "loss": last["loss"], "images_per_s": last["images_per_s"]}
    info = {**step.result, "checkpoint": run.path(PRETRAIN_CHECKPOINT)}
    if registry["store"]:
        info["store_entry"] = register_in_store(run.local(PRETRAIN_CHECKPOINT), input_cfg, registry, run.root)
    return info


def register_in_store(checkpoint: str, input_cfg: dict[str, Any], registry: dict[str, Any], run_dir: str) -> dict:
    """Register ``checkpoint`` in ``registry["store"]`` keyed by the input's resolution and product
    (given, or read from the input's ``resolution``/``product`` columns); logged and returned."""
    from pipeline.ssl.store import input_resolution, register

    resolution, product = registry.get("resolution"), registry.get("product")
    if resolution is None or product is None:
        found_resolution, found_product = input_resolution(input_cfg)
        resolution = found_resolution if resolution is None else resolution
        product = found_product if product is None else product
    entry = register(registry["store"], checkpoint, resolution=resolution, product=product, extra={"run_dir": run_dir})
    log.info("pretrain: registered %s in model store %s", entry["key"], registry["store"])
    return entry
