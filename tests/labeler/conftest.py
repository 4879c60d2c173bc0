"""Fixtures: 60 small generated JPEG files (no real dataset needed), and a fresh label store per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.labeler import LabelStore

CLASSES = {"fields": (90, 160, 60), "roofs": (170, 80, 70), "water": (40, 90, 180)}


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """(ids, uris) of 60 distinct 256 x 256 JPEG files generated with PIL (3 classes x 20), ids ``<class>/<class>NN.jpg``."""
    root = tmp_path_factory.mktemp("labeler_images")
    rng = np.random.default_rng(0)
    ids, uris = [], []
    for label, colour in CLASSES.items():
        (root / label).mkdir()
        for k in range(20):
            pixels = np.clip(np.asarray(colour) + rng.normal(0, 25, (256, 256, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            ImageDraw.Draw(image).text((16, 16), f"{label} {k}", fill=(255, 255, 255))
            item_id = f"{label}/{label}{k:02d}.jpg"
            image.save(root / item_id, format="JPEG", quality=90)
            ids.append(item_id)
            uris.append(str(root / item_id))
    return ids, uris


@pytest.fixture
def store(tmp_path: Path, image_files) -> LabelStore:
    """A label store with all 60 images registered and queued in fixture order."""
    ids, uris = image_files
    s = LabelStore(tmp_path / "labels.sqlite")
    s.register(ids, uris)
    s.enqueue(ids, batch="b0")
    return s


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return path
