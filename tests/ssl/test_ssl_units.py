"""Unit tests of the SSL building blocks: schedule, backbones, losses vs references, training
steps, augmentation collate and checkpoint round trip (no Ray)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.backbones import build_ssl_backbone
from pipeline.backbones.small_cnn import SmallCNN
from pipeline.ssl.checkpoint import load_backbone, read_checkpoint, save_checkpoint
from pipeline.ssl.optim import OPTIMIZERS, build_optimizer, scaled_lr, warmup_cosine
from pipeline.ssl.train import build_model, checkpoint_meta, train_step
from pipeline.ssl.transforms import TwoViewCollate, batch_seed

SSL = {
    "simclr": {
        "method": "simclr",
        "image_size": 32,
        "backbone": {"name": "small_cnn", "width": 8, "blocks_per_stage": 1},
        "head": {"hidden_dim": 32, "output_dim": 16, "temperature": 0.5},
    },
    "simsiam": {
        "method": "simsiam",
        "image_size": 32,
        "backbone": {"name": "small_cnn", "width": 8, "blocks_per_stage": 1},
        "head": {"hidden_dim": 32, "output_dim": 16, "prediction_hidden_dim": 8},
    },
}


def test_warmup_cosine_matches_formula():
    peak, total, warm = 0.4, 100, 10
    lrs = [warmup_cosine(t, total, warm, peak) for t in range(total)]
    assert lrs[0] == pytest.approx(peak / warm)
    assert lrs[warm - 1] == pytest.approx(peak)
    assert lrs[warm] == pytest.approx(peak)
    t = 55
    assert lrs[t] == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * (t - warm) / (total - warm))))
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))
    assert scaled_lr(0.3, 512) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        warmup_cosine(0, 0, 0, 1.0)


@pytest.mark.parametrize(
    "name,kwargs,dim",
    [("small_cnn", {"width": 4, "blocks_per_stage": 1}, 32), ("resnet18", {"small_input": True}, 512)],
)
def test_backbone_maps_images_to_features(name, kwargs, dim):
    net, d = build_ssl_backbone(name, **kwargs)
    assert d == dim
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError):
        build_ssl_backbone("vgg")


def _nt_xent_reference(z0: np.ndarray, z1: np.ndarray, t: float) -> float:
    z = np.concatenate([z0, z1])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / t
    n = len(z0)
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [k for k in range(2 * n) if k != i]
        losses.append(-sim[i, j] + np.log(np.exp(sim[i, others]).sum()))
    return float(np.mean(losses))


def test_simclr_loss_is_nt_xent():
    torch.manual_seed(0)
    model = build_model(SSL["simclr"]).eval()
    x0, x1 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        loss = model(x0, x1).item()
        z0, z1 = (model.projection_head(model.backbone(x)).numpy() for x in (x0, x1))
    assert loss == pytest.approx(_nt_xent_reference(z0, z1, 0.5), rel=1e-4)


def test_simsiam_loss_is_symmetric_negative_cosine():
    torch.manual_seed(0)
    model = build_model(SSL["simsiam"]).eval()
    x0, x1 = torch.randn(6, 3, 32, 32), torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        loss = model(x0, x1).item()
        z0, z1 = (model.projection_head(model.backbone(x)) for x in (x0, x1))
        p0, p1 = model.prediction_head(z0), model.prediction_head(z1)
    cos = lambda a, b: (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # noqa: E731
    assert loss == pytest.approx(-0.5 * (cos(p0, z1).mean() + cos(p1, z0).mean()).item(), rel=1e-5)
    assert -1.0 <= loss <= 1.0


@pytest.mark.parametrize("method", ["simclr", "simsiam"])
def test_training_step_decreases_loss_on_a_tiny_batch(method):
    torch.manual_seed(0)
    model = build_model(SSL[method])
    optimizer = build_optimizer(model.parameters(), "adam", lr=1e-3, momentum=0.9, weight_decay=0.0)
    x = torch.rand(16, 3, 32, 32)
    view0, view1 = x + 0.05 * torch.randn_like(x), x.flip(-1)
    losses = [train_step(model, optimizer, view0, view1, lr=1e-3).item() for _ in range(25)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.05


def test_unknown_method_and_optimizer_are_rejected():
    with pytest.raises(ValueError, match="method"):
        build_model({**SSL["simclr"], "method": "byol"})
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(SmallCNN(4, 1).parameters(), "rmsprop", lr=0.1, momentum=0.9, weight_decay=0.0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    ssl = {**SSL["simclr"], "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    model = build_model(ssl)
    optimizer = build_optimizer(model.parameters(), "sgd", lr=0.1, momentum=0.9, weight_decay=0.0)
    train_step(model, optimizer, torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32), lr=0.1)
    history = [{"epoch": 1, "loss": 1.0}]
    save_checkpoint(str(tmp_path), model, checkpoint_meta(ssl, model, 1, history), optimizer)

    backbone, dim, meta = load_backbone(str(tmp_path))
    assert dim == 64 and meta["image_size"] == 32 and meta["mean"] == [0.1, 0.2, 0.3] and meta["method"] == "simclr"
    assert not backbone.training
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(backbone(x), model.backbone(x), atol=1e-6)
    state, meta = read_checkpoint(str(tmp_path / "model.pt"))
    assert meta["history"] == history and state["optimizer"]["state"]
    # the embed step can pool the checkpoint's last two stages instead of its output
    from pipeline.backbones import build_backbone

    stages = build_backbone("ssl", str(tmp_path), "stages")
    assert stages.dim == 96 and stages.mean == (0.1, 0.2, 0.3) and stages.image_size == 32
    with torch.no_grad():
        assert stages.module(x).shape == (3, stages.dim)
    with pytest.raises(FileNotFoundError):
        load_backbone(str(tmp_path / "missing"))


def _jpeg(color: tuple[int, int, int], size: int = 48) -> bytes:
    arr = np.zeros((size, size, 3), np.uint8)
    arr[: size // 2] = color
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="JPEG")
    return out.getvalue()


def test_two_view_collate_is_seeded_and_replaces_bad_images():
    augment = {
        "kind": "simclr",
        "min_scale": 0.2,
        "random_gray_scale": 0.0,
        "gaussian_blur": 0.0,
        "vf_prob": 0.5,
        "rr_prob": 0.5,
        "rr_degrees": None,
    }
    batch = {
        "id": np.array(["a", "b", "c"], dtype=object),
        "image": np.array([_jpeg((255, 0, 0)), b"not an image", _jpeg((0, 0, 255))], dtype=object),
    }
    collate = TwoViewCollate(augment, 24, mean=[0.5] * 3, std=[0.5] * 3, seed=1, epoch=0)
    v0, v1 = collate(batch)
    assert v0.shape == v1.shape == (3, 3, 24, 24) and collate.rejected == 1
    assert v0.min() >= -1.0 - 1e-6 and v0.max() <= 1.0 + 1e-6
    again = TwoViewCollate(augment, 24, mean=[0.5] * 3, std=[0.5] * 3, seed=1, epoch=0)(batch)
    assert torch.equal(v0, again[0]) and torch.equal(v1, again[1])
    other_epoch = TwoViewCollate(augment, 24, mean=[0.5] * 3, std=[0.5] * 3, seed=1, epoch=1)(batch)
    assert not torch.equal(v0, other_epoch[0])
    assert batch_seed(0, 0, ["a"]) != batch_seed(0, 0, ["b"])
    with pytest.raises(ValueError, match="no decodable"):
        collate({"id": np.array(["x"], dtype=object), "image": np.array([b""], dtype=object)})


def _simclr_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """One of ``world`` gloo processes: SimCLR loss on this rank's slice of a fixed global batch."""
    import torch.distributed as dist

    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(SSL["simclr"], distributed=world > 1).eval()  # same weights on every rank
    x0, x1 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    with torch.no_grad():
        loss = model(x0[part], x1[part])
        z0, z1 = (model.projection_head(model.backbone(x)) for x in (x0, x1))
    torch.save({"loss": loss.item(), "z0": z0, "z1": z1}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_simclr_gathers_negatives_from_every_worker(tmp_path):
    """Two gloo ranks holding 4 pairs each: their mean loss is NT-Xent over all 8 pairs (negatives
    from both ranks), not over each rank's own 4 pairs."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.start_processes(_simclr_rank, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    z0, z1 = ranks[0]["z0"].numpy(), ranks[0]["z1"].numpy()
    global_loss = _nt_xent_reference(z0, z1, 0.5)
    local_only = np.mean([_nt_xent_reference(z0[p], z1[p], 0.5) for p in (slice(0, 4), slice(4, 8))])
    assert abs(global_loss - local_only) > 1e-2  # the two readings are distinguishable here
    assert np.mean([r["loss"] for r in ranks]) == pytest.approx(global_loss, rel=1e-4)


def _symmetry_counts(augment: dict, draws: int = 200) -> np.ndarray:
    """How often the two views of a random 16 px image are each of its 8 dihedral symmetries
    (colour jitter, grayscale and blur off, crop = whole image: only geometry changes)."""
    import random

    from pipeline.ssl.transforms import build_two_view_transform

    geometry_only = {**augment, "cj_prob": 0.0, "random_gray_scale": 0.0, "gaussian_blur": 0.0, "min_scale": 1.0}
    transform = build_two_view_transform(geometry_only, 16, mean=(0, 0, 0), std=(1, 1, 1))
    arr = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    symmetries = [np.rot90(arr, k) for k in range(4)] + [np.rot90(arr[:, ::-1], k) for k in range(4)]
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    counts = np.zeros(8, dtype=np.int64)
    for _ in range(draws):
        for view in transform(Image.fromarray(arr)):
            pixels = (view.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            match = [i for i, s in enumerate(symmetries) if np.array_equal(pixels, s)]
            assert len(match) == 1, "a view must be exactly one symmetry of the input"
            counts[match[0]] += 1
    return counts


def test_satellite_augmentation_draws_all_8_symmetries_uniformly():
    import yaml
    from scipy.stats import chisquare

    from tests.conftest import REPO

    satellite = yaml.safe_load((REPO / "conf" / "ssl" / "augment" / "satellite.yaml").read_text())
    counts = _symmetry_counts(satellite)
    assert (counts > 0).all() and chisquare(counts).pvalue > 1e-3, counts
    simclr = yaml.safe_load((REPO / "conf" / "ssl" / "augment" / "simclr.yaml").read_text())
    assert (_symmetry_counts(simclr) > 0).sum() < 8  # the plain preset does not rotate: not all 8


def test_every_optimizer_name_builds_its_optimizer_with_the_settings():
    from lightly.utils.lars import LARS

    expected = {"sgd": torch.optim.SGD, "lars": LARS, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    assert set(OPTIMIZERS) == set(expected)
    for name, cls in expected.items():
        optimizer = build_optimizer(SmallCNN(4, 1).parameters(), name, lr=0.05, momentum=0.8, weight_decay=1e-4)
        group = optimizer.param_groups[0]
        assert type(optimizer) is cls and group["lr"] == 0.05 and group["weight_decay"] == 1e-4
        assert group.get("momentum", 0.8) == 0.8  # Adam/AdamW have no momentum setting
