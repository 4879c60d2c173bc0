"""Fixtures: a few real images from ../shared/datasets and a local WMTS server cut from them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wmts_server import WMTSServer  # noqa: E402

from pipeline.satellite.codec import decode_rgb_array  # noqa: E402


@pytest.fixture(scope="session")
def real_images(datasets_dir) -> list[np.ndarray]:
    """Up to 16 UC Merced images (256 x 256 RGB), the first of each class in the first shard."""
    table = pq.read_table(datasets_dir / "ucmerced" / "part-00000.parquet", columns=["id", "image"])
    ids = table.column("id").to_pylist()
    picks, seen = [], set()
    for i, name in enumerate(ids):
        cls = name.split("/")[0]
        if cls not in seen:
            seen.add(cls)
            picks.append(i)
    images = [decode_rgb_array(table.column("image")[i].as_py()) for i in picks[:16]]
    return [im[:256, :256] for im in images]


@pytest.fixture
def wmts_server(real_images):
    server = WMTSServer(real_images, slow_s=120).start()
    yield server
    server.stop()
