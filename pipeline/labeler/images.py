"""Image bytes for the labeler, looked up by id only: catalog uri -> bytes -> JPEG thumbnail.

A uri comes from the label store's catalog (filled from a run's embeddings/manifest table),
never from a client. Bytes come from ``pipeline.io.sources.load_image_bytes`` (files,
``part.parquet#row``, ``shard.tar#member``), thumbnails from ``pipeline.io.images.thumbnail_jpeg``.
"""

from __future__ import annotations

import collections
import io
import threading
from collections.abc import Callable

from PIL import Image

from pipeline.io.images import thumbnail_jpeg
from pipeline.io.sources import load_image_bytes


def browser_jpeg(data: bytes, max_side: int) -> bytes:
    """``data`` itself when it already is an RGB/gray JPEG within ``max_side`` (no re-encoding,
    which is most of the server's CPU), else a ``thumbnail_jpeg`` of it."""
    try:
        with Image.open(io.BytesIO(data)) as im:  # header only
            if im.format == "JPEG" and im.mode in ("RGB", "L") and max(im.size) <= max_side:
                return data
    except Exception:  # noqa: BLE001 - thumbnail_jpeg reports unreadable input with its reason
        pass
    return thumbnail_jpeg(data, max_side)


class ThumbnailCache:
    """Thread-safe LRU of ``id -> JPEG thumbnail`` bytes, filled on demand from ``uri_of(id)``.

    Concurrent requests for the same id decode it once (a per-id lock), so a labeler's prefetch
    and a second tab never double the work.
    """

    def __init__(self, uri_of: Callable[[str], str | None], max_side: int = 768, max_items: int = 512):
        if max_side < 16:
            raise ValueError(f"max_side must be >= 16, got {max_side}")
        self.uri_of = uri_of
        self.max_side = max_side
        self.max_items = max_items
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, item_id: str) -> bytes | None:
        """Thumbnail of ``item_id``; None when the id is not in the catalog."""
        with self._lock:
            if item_id in self._items:
                self._items.move_to_end(item_id)
                return self._items[item_id]
            gate = self._loading.setdefault(item_id, threading.Lock())
        try:
            with gate:
                with self._lock:
                    if item_id in self._items:
                        return self._items[item_id]
                uri = self.uri_of(item_id)
                if uri is None:
                    return None
                jpeg = browser_jpeg(load_image_bytes(uri), self.max_side)
                with self._lock:
                    self._items[item_id] = jpeg
                    while len(self._items) > self.max_items:
                        self._items.popitem(last=False)
                return jpeg
        finally:
            with self._lock:
                self._loading.pop(item_id, None)
