"""Fixtures: a few real UC Merced images written as files, and a fresh label store per test."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.labeler import LabelStore


@pytest.fixture(scope="session")
def image_files(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """(ids, uris) of 60 real images written to a temp folder as JPEG files (3 classes x 20)."""
    part = sorted((datasets_dir / "ucmerced").glob("part-*.parquet"))[0]
    table = pq.read_table(part, columns=["id", "label", "image"])
    root = tmp_path_factory.mktemp("ucmerced_files")
    ids, uris, per_class = [], [], {}
    for item_id, label, data in zip(*(table.column(c).to_pylist() for c in ("id", "label", "image"))):
        if per_class.get(label, 0) >= 20 or (len(per_class) >= 3 and label not in per_class):
            continue
        per_class[label] = per_class.get(label, 0) + 1
        path = root / (item_id.rsplit(".", 1)[0] + ".jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        ids.append(item_id)
        uris.append(str(path))
    assert len(ids) == 60
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
