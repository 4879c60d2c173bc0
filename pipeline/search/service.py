"""Query front-end shared by ``strata search`` and ``strata serve``: image / id / vector -> top-k.

Image queries are embedded with the run's own embedder (backbone and preprocessing recorded at
embedding time, copied into the index's ``config.json``), optionally as a tile grid merged by
bucket voting (:mod:`pipeline.search.tiles`). Thumbnails are looked up by id only: id -> ``uri``
from the index metadata -> bytes via ``pipeline.io.sources.load_image_bytes``.
"""
from __future__ import annotations

import functools
import io
import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from pipeline.rundir import RunDir
from pipeline.search.filters import Filters
from pipeline.search.index import SearchIndex
from pipeline.search.tiles import bucket_vote, cut_tiles, parse_tiles, vote_weights

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A malformed query (maps to HTTP 400)."""


class UnknownIdError(KeyError):
    """An id that is not in the index (maps to HTTP 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


def embed_config_of(run: RunDir) -> dict | None:
    """The ``embed`` config section recorded in ``run.json`` (None when the run has none)."""
    config = (run.read_json("run.json", default={}) or {}).get("config") or {}
    return config.get("embed")


def _decode(image: bytes | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    from pipeline.io.images import RejectedImage, decode_rgb

    try:
        return decode_rgb(bytes(image))
    except RejectedImage as exc:
        raise QueryError(f"cannot use the uploaded image: {exc.reason}") from None


class SearchService:
    """Answers queries against one :class:`SearchIndex` (thread-safe for concurrent requests)."""

    def __init__(
        self,
        index: SearchIndex,
        embedder_factory: Callable[[], Any] | None = None,
        image_loader: Callable[[str], bytes] | None = None,
        thumbnail_side: int = 256,
        max_k: int = 1000,
        thumbnail_cache: int = 2048,
    ):
        self.index = index
        self._embedder_factory = embedder_factory
        self._embedder = None
        self._embed_lock = threading.Lock()
        self._image_loader = image_loader
        self.thumbnail_side = int(thumbnail_side)
        self.max_k = int(max_k)
        self._thumbnail = functools.lru_cache(maxsize=thumbnail_cache)(self._make_thumbnail)

    @classmethod
    def from_run(
        cls,
        run_dir: str | RunDir,
        nprobe: int | None = None,
        ef_search: int | None = None,
        use_gpu: bool | None = None,
        embed_overrides: dict | None = None,
        **kwargs: Any,
    ) -> "SearchService":
        """Load ``<run_dir>/index`` and the embedder config recorded for the run."""
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(str(run_dir))
        index = SearchIndex.load(run.path("index"), nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu)
        embed_cfg = index.info.get("embed") or embed_config_of(run)
        factory = None
        if embed_cfg is not None:
            embed_cfg = {**embed_cfg, **(embed_overrides or {})}

            def factory() -> Any:
                from pipeline.embed import Embedder

                return Embedder(embed_cfg)

        else:
            log.warning("run %s records no embed config: image queries are disabled", run.root)
        from pipeline.io.sources import load_image_bytes

        return cls(index, embedder_factory=factory, image_loader=load_image_bytes, **kwargs)

    # ---- embedding -----------------------------------------------------------------------------
    @property
    def can_embed(self) -> bool:
        return self._embedder_factory is not None

    def warmup(self) -> None:
        """Build the embedder now (a server does this at start so the first upload is not slow)."""
        if self._embedder_factory is not None:
            self._get_embedder()

    def _get_embedder(self) -> Any:
        with self._embed_lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            return self._embedder

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) embeddings of PIL images with the run's embedder (built on first use)."""
        if self._embedder_factory is None:
            raise QueryError("image queries are unavailable: the run records no embedder config")
        embedder = self._get_embedder()
        with self._embed_lock:
            return np.asarray(embedder.embed_pil(list(images)), dtype=np.float32)

    # ---- queries -------------------------------------------------------------------------------
    def search(
        self,
        *,
        image: bytes | Image.Image | None = None,
        id: str | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int = 10,
        filters: Filters | None = None,
        tiles: str | int | None = None,
        per_tile_k: int | None = None,
    ) -> dict:
        """Top-``k`` neighbours of exactly one of ``image`` / ``id`` / ``vector``.

        ``tiles`` (image or id queries): grid spec such as ``"2x2"``; each tile retrieves
        ``per_tile_k`` (default ``k``) rows and the lists are merged by bucket voting.
        Returns ``{"results": [{rank, id, score, <carried columns>}], "k", "took_ms", "query"}``.
        """
        t0 = time.perf_counter()
        given = [name for name, v in (("image", image), ("id", id), ("vector", vector)) if v is not None]
        if len(given) != 1:
            raise QueryError(f"give exactly one of image, id or vector (got {given or 'none'})")
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise QueryError(f"k must be an integer, got {k!r}") from None
        if not 1 <= k <= self.max_k:
            raise QueryError(f"k must be between 1 and {self.max_k}, got {k}")
        try:
            grids = parse_tiles(tiles)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        tiled = grids != [(1, 1)]
        query: dict[str, Any] = {"type": given[0], "tiles": tiles if tiled else None}

        if vector is not None:
            if tiled:
                raise QueryError("tiles apply to image or id queries, not to vectors")
            vectors = np.asarray(vector, dtype=np.float32).reshape(1, -1) if np.ndim(vector) == 1 else None
            if vectors is None or vectors.shape[1] != self.index.dim:
                raise QueryError(f"vector must be a flat list of {self.index.dim} numbers, got shape {np.shape(vector)}")
            if not np.isfinite(vectors).all():
                raise QueryError("vector contains NaN or infinite values")
        elif id is not None:
            query["id"] = id
            row = self._row(id)
            vectors = self.index.vectors(row) if not tiled else self._image_vectors(self._image_of(id), grids)
        else:
            vectors = self._image_vectors(_decode(image), grids)

        try:
            if not tiled:
                rows, scores = self.index.search_rows(vectors, k, filters)
                rows, scores = rows[0], scores[0]
            else:
                tile_rows, tile_scores = self.index.search_rows(vectors, int(per_tile_k or k), filters)
                rows, scores = bucket_vote(tile_rows, vote_weights(tile_scores, self.index.cfg.metric), k)
        except ValueError as exc:  # FilterError and shape errors
            raise QueryError(str(exc)) from None
        return {
            "results": self.index.records(rows, scores),
            "k": k,
            "took_ms": round(1000 * (time.perf_counter() - t0), 3),
            "query": query,
        }

    def _row(self, id: str) -> np.ndarray:
        try:
            return self.index.rows_of([id])
        except KeyError:
            raise UnknownIdError(f"unknown id {id!r}") from None

    def _image_vectors(self, image: Image.Image, grids: list[tuple[int, int]]) -> np.ndarray:
        try:
            tiles = cut_tiles(image, grids)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        return self.embed_images(tiles)

    # ---- images ----------------------------------------------------------------------------------
    def _image_of(self, id: str) -> Image.Image:
        return _decode(self.image_bytes(id))

    def image_bytes(self, id: str) -> bytes:
        """Encoded original bytes of indexed image ``id`` (via its ``uri``)."""
        row = self._row(id)
        if "uri" not in self.index.meta.column_names or self._image_loader is None:
            raise LookupError("this index has no image uris")
        uri = self.index.meta.column("uri")[int(row[0])].as_py()
        if not uri:
            raise LookupError(f"no uri recorded for id {id!r}")
        return self._image_loader(uri)

    def thumbnail(self, id: str, max_side: int | None = None) -> bytes:
        """JPEG thumbnail (longer side <= ``max_side``) of indexed image ``id``; cached."""
        side = int(max_side or self.thumbnail_side)
        if not 16 <= side <= 1024:
            raise QueryError(f"thumbnail size must be between 16 and 1024, got {side}")
        self._row(id)
        return self._thumbnail(id, side)

    def _make_thumbnail(self, id: str, side: int) -> bytes:
        from pipeline.io.images import thumbnail_jpeg

        return thumbnail_jpeg(self.image_bytes(id), side)

    def describe(self) -> dict:
        return {**self.index.describe(), "image_queries": self.can_embed}


def image_to_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode a PIL image (tests, clients)."""
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


__all__ = ["SearchService", "QueryError", "UnknownIdError", "embed_config_of", "image_to_bytes"]
