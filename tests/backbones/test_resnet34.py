"""The ResNet-34 registry entry: found by name, its YAML composes, checkpoint weights load, stages pool."""

import numpy as np
import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pipeline.backbones import build_backbone, registry
from pipeline.config import CONF_DIR
from pipeline.embed.embedder import Embedder


def _embed_config(**overrides) -> dict:
    """``strata embed embed=resnet34``'s embed group, composed by Hydra from ``conf/``."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        embed = OmegaConf.to_container(compose("embed", overrides=["embed=resnet34"]).embed)
    return {**embed, **overrides}


def test_resnet34_is_registered_and_its_yaml_selects_it():
    assert "resnet34" in registry()
    cfg = _embed_config()
    assert cfg["backbone"] == "resnet34" and cfg["checkpoint"] is None


def test_resnet34_loads_a_checkpoint_and_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet34(weights=None).eval()
    path = tmp_path / "r34.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    backbone = build_backbone("resnet34", str(path), "head")
    x = torch.randn(2, 3, 64, 64)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(backbone.module(x), reference(x), rtol=0, atol=0)
    assert backbone.dim == 512
    with pytest.raises(ValueError, match="not a torchvision resnet34"):
        torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pt")
        build_backbone("resnet34", str(tmp_path / "bad.pt"), "head")


def test_resnet34_random_init_embeds_without_network_and_pools_stages():
    images = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    embedder = Embedder(_embed_config(image_size=32, features="stages", pixel_hash=False))
    x = embedder.embed_pil([Image.fromarray(a) for a in images])
    assert x.shape == (3, 128 + 256 + 512)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
