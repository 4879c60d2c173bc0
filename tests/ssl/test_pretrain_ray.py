"""Ray Train end to end on real AID images: 2 CPU workers (gloo, DDP, NT-Xent gathered across
workers), checkpoint every epoch, resume from the latest checkpoint, embed stage on the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.processes import run_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _overrides(tmp_path, method: str, epochs: int) -> list[str]:
    return [
        f"ssl={method}",
        "ssl/augment=satellite",
        "ssl.image_size=32",
        "ssl.backbone.width=8",
        "ssl.backbone.blocks_per_stage=1",
        "ssl.head.hidden_dim=32",
        "ssl.head.output_dim=16",
        f"train.epochs={epochs}",
        "train.batch_size=8",
        "train.num_workers=2",
        "train.cpus_per_worker=0.5",
        "train.max_steps_per_epoch=2",
        "train.warmup_epochs=0",
        f"run_dir={tmp_path / 'run'}",
    ]


def _config(tmp_path, method: str, epochs: int, *extra: str) -> dict:
    from hydra import compose, initialize_config_dir

    from jobs._config import to_dict
    from tests.conftest import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("pretrain", overrides=[*_overrides(tmp_path, method, epochs), *extra])
    return {
        "input": to_dict(cfg.input),
        "ssl": to_dict(cfg.ssl),
        "train": to_dict(cfg.train),
        "seed": 0,
        "run_dir": str(tmp_path / "run"),
    }


def test_two_workers_train_checkpoint_resume_and_embed(ray_session, datasets_dir, tmp_path):
    from pipeline.artifacts import PRETRAIN_CHECKPOINT
    from pipeline.embed.stage import EmbedStage
    from pipeline.io.sources import iter_images
    from pipeline.io.tables import arrow_to_embeddings
    from pipeline.rundir import RunDir
    from pipeline.ssl.checkpoint import load_backbone, read_checkpoint
    from pipeline.ssl.train import run_pretrain

    source = (f"input.path={datasets_dir / 'aid150' / 'part-00001.parquet'}", "input.limit=64")
    input_cfg = _config(tmp_path, "simclr", 1, *source)["input"]  # all input settings, as the job records them
    run = RunDir(str(tmp_path / "run"))

    def step(epochs: int) -> dict:
        cfg = _config(tmp_path, "simclr", epochs)
        return run_pretrain(run, input_cfg, cfg["ssl"], cfg["train"], seed=0)

    first = step(1)
    first_history = read_checkpoint(first["checkpoint"])[1]["history"]
    assert [h["epoch"] for h in first_history] == [1] and first_history[0]["steps"] == 2
    assert np.isfinite(first_history[0]["loss"]) and first_history[0]["images_per_s"] > 0

    # Same storage path and name: Ray Train hands the epoch-1 checkpoint back; only epoch 2 runs.
    # This run is `strata pretrain` as a process, joining the session's Ray as it would a cluster.
    address = f"ray.address={ray_session.get_runtime_context().gcs_address}"
    run_job("pretrain", *_overrides(tmp_path, "simclr", 2), *source, address, timeout=600)
    second = {**run.marker("pretrain"), "checkpoint": run.path(PRETRAIN_CHECKPOINT)}
    state, meta = read_checkpoint(second["checkpoint"])
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["history"][0] == first_history[0] and meta["history"][1]["resumed_from_epoch"] == 1
    assert state["optimizer"]["state"], "optimizer state (momentum) must be checkpointed for resuming"
    saved = json.loads((tmp_path / "run" / "pretrain" / "metrics.json").read_text())
    assert [h["epoch"] for h in saved] == [1, 2]
    assert run.is_done("pretrain") and second["epochs"] == 2
    # rank 0 follows the epochs in <run_dir>/progress.log: epoch 1, then the resumed run's epoch 2
    from pipeline.progress import read_log

    epochs = [line for line in read_log(run) if " ssl/epochs " in line]
    assert any("1/1 epoch (100%)" in line and "loss=" in line for line in epochs), epochs
    assert any("resumed=1" in line for line in epochs), epochs
    assert any("2/2 epoch (100%)" in line and "loss=" in line for line in epochs), epochs
    finished = run.marker("pretrain")["finished_at"]
    again = step(2)  # the job's marker holds for the same settings in-process: not retrained
    assert (
        again["epochs"] == 2 and again["loss"] == second["loss"] and run.marker("pretrain")["finished_at"] == finished
    )

    module, dim, meta = load_backbone(second["checkpoint"])
    assert (dim, meta["image_size"], meta["method"], meta["epoch"]) == (64, 32, "simclr", 2)
    stage = EmbedStage(
        {"backbone": "ssl", "checkpoint": second["checkpoint"], "l2_normalize": False, "pixel_hash": False}
    )
    rows = next(iter_images(input_cfg)).slice(0, 4)
    out = stage(rows)
    x = arrow_to_embeddings(out.column("embedding"))
    assert stage.embedder.image_size == 32 and x.shape == (4, 64) and np.isfinite(x).all()
    assert out.column("reject_reason").null_count == 4
    embedder, blobs = stage.embedder, rows.column("image").to_pylist()
    # Same numbers as the raw backbone fed like training (resize to 32 px, checkpoint's mean/std).
    pixels = torch.from_numpy(np.stack([embedder.decode(b) for b in blobs])).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert np.allclose(x, module((pixels - mean) / std).numpy(), atol=1e-5)


def test_simsiam_two_workers_report_the_loss_of_their_batches(ray_session, datasets_dir, tmp_path):
    """lr = 0 and every row the same image under the same id: each worker's every batch gets the same
    augmented views (seeded by the batch ids), so the reported epoch loss must equal the symmetric
    negative cosine of the checkpointed (unchanged) model on those views, computed here by hand."""
    import pyarrow.parquet as pq
    import ray.data

    from pipeline.ssl.checkpoint import load_backbone, read_checkpoint
    from pipeline.ssl.train import build_model, pretrain
    from pipeline.ssl.transforms import TwoViewCollate

    image = pq.read_table(datasets_dir / "aid150" / "part-00002.parquet", columns=["image"]).column("image")[0].as_py()
    cfg = _config(tmp_path, "simsiam", epochs=1)
    cfg["ssl"]["optimizer"]["lr"] = 0.0
    result = pretrain(cfg, ray.data.from_items([{"id": "same", "image": image}] * 32))
    assert load_backbone(result.checkpoint)[2]["method"] == "simsiam"

    state, _ = read_checkpoint(result.checkpoint)
    model = build_model(cfg["ssl"])
    model.load_state_dict(state["model"])
    model.train()  # as in training: batch-norm on batch statistics
    ssl = cfg["ssl"]
    batch = {"id": np.array(["same"] * 8, dtype=object), "image": np.array([image] * 8, dtype=object)}
    view0, view1 = TwoViewCollate(ssl["augment"], ssl["image_size"], ssl["mean"], ssl["std"], seed=0, epoch=0)(batch)
    with torch.no_grad():
        z0, z1 = (model.projection_head(model.backbone(v)) for v in (view0, view1))
        p0, p1 = model.prediction_head(z0), model.prediction_head(z1)
    cos = torch.nn.functional.cosine_similarity
    expected = -0.5 * (cos(p0, z1).mean() + cos(p1, z0).mean()).item()
    assert result.history[0]["steps"] == 2
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_a_killed_worker_restarts_from_the_last_epoch_checkpoint(ray_session, datasets_dir, tmp_path):
    from pipeline.rundir import RunDir
    from pipeline.ssl.checkpoint import read_checkpoint
    from pipeline.ssl.train import run_pretrain

    input_cfg = {"path": str(datasets_dir / "aid150" / "part-00003.parquet"), "limit": 32}
    cfg = _config(tmp_path, "simclr", 2)
    marker = tmp_path / "killed"
    train = {**cfg["train"], "num_workers": 1, "die_after_epoch": {"epoch": 1, "marker": str(marker), "delay_s": 5}}
    out = run_pretrain(RunDir(str(tmp_path / "run")), input_cfg, cfg["ssl"], train, seed=0)
    assert marker.read_text() == "killed after epoch 1\n"  # the worker process really died once
    history = read_checkpoint(out["checkpoint"])[1]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["resumed_from_epoch"] == 1  # epoch 1 was not trained again
