"""What the server sends a browser: small JPEGs untouched, everything else a bounded JPEG."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.labeler.images import ThumbnailCache, browser_jpeg


def _encode(size: tuple[int, int], fmt: str) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format=fmt)
    return out.getvalue()


def test_browser_jpeg():
    small = _encode((256, 200), "JPEG")
    assert browser_jpeg(small, 768) is small
    for data in (_encode((1000, 500), "JPEG"), _encode((300, 300), "PNG")):
        out = Image.open(io.BytesIO(browser_jpeg(data, 256)))
        assert out.format == "JPEG" and max(out.size) == 256


def test_thumbnail_cache_reads_catalog_uris_only(image_files):
    ids, uris = image_files
    catalog = dict(zip(ids, uris))
    cache = ThumbnailCache(catalog.get, max_side=128, max_items=2)
    assert cache.get(uris[0]) is None and cache.get("../" + ids[0]) is None
    first = cache.get(ids[0])
    assert Image.open(io.BytesIO(first)).size == (128, 128)
    assert cache.get(ids[0]) is first  # cached
    cache.get(ids[1]), cache.get(ids[2])
    assert list(cache._items) == [ids[1], ids[2]]  # LRU bound
    assert Path(uris[0]).read_bytes() != first
