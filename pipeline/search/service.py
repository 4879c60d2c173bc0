"""Query front-end shared by ``strata search`` and ``strata serve``: image / id / vector -> top-k.

Image queries are embedded with the run's own embedder (backbone and preprocessing recorded at
embedding time, copied into the index's ``config.json``) and projected like the pool when the run
was made with ``embed.dim`` (:func:`pipeline.embed.reduce.query_transform`), optionally as a tile grid merged by
bucket voting (:mod:`pipeline.search.tiles`). Thumbnails are looked up by id only: id -> ``uri``
from the index metadata -> bytes via ``pipeline.io.sources.load_image_bytes``.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from pipeline.artifacts import EMBEDDINGS, INDEX, RUN_JSON
from pipeline.rundir import RunDir
from pipeline.search.config import conf_default
from pipeline.search.filters import Filters, filter_mask, filter_values
from pipeline.search.index import SearchIndex
from pipeline.search.tiles import bucket_vote, cut_tiles, parse_tiles, vote_weights

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A malformed query (maps to HTTP 400)."""


class LimitError(QueryError):
    """A query above a configured limit (maps to HTTP 413 for sizes, 400 otherwise)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Cancelled(RuntimeError):
    """The client went away or the request ran out of time: the query's remaining work is dropped."""


@dataclass(frozen=True)
class QueryLimits:
    """Work one query may cause (``serve.limits`` in ``conf/serve.yaml``, where the defaults live).

    ``max_query_pixels``: width x height of a query image (read from its header, before decoding);
    ``max_query_side``: longer side a query image is decoded to (JPEG draft) and then shrunk to;
    ``max_tiles`` / ``max_grids``: tiles per query over all grids, and grids per query.
    """

    max_query_pixels: int
    max_query_side: int
    max_tiles: int
    max_grids: int

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> QueryLimits:
        return cls(**{f.name: int(cfg[f.name]) for f in fields(cls)})


class UnknownIdError(KeyError):
    """An id that is not in the index (maps to HTTP 404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


def embed_config_of(run: RunDir) -> dict | None:
    """The ``embed`` config section recorded in ``run.json`` (None when the run has none)."""
    config = (run.read_json(RUN_JSON, default={}) or {}).get("config") or {}
    return config.get("embed")


def _decode(image: bytes | Image.Image, limits: QueryLimits | None, what: str = "the uploaded image") -> Image.Image:
    """RGB image of a query; with ``limits``, refused above ``max_query_pixels`` (from the header)
    and decoded at reduced scale (JPEG draft), then shrunk, to at most ``max_query_side``."""
    from pipeline.io.images import RejectedImage, decode_rgb

    if isinstance(image, Image.Image):
        img = image.convert("RGB")
    else:
        try:
            if limits is None:
                img = decode_rgb(bytes(image))
            else:
                img = decode_rgb(bytes(image), max_pixels=limits.max_query_pixels, draft_size=limits.max_query_side)
        except RejectedImage as exc:
            if exc.reason.startswith("too large") and limits is not None:
                raise LimitError(
                    f"cannot use {what}: {exc.reason} (limit: serve limits.max_query_pixels)", status=413
                ) from None
            raise QueryError(f"cannot use {what}: {exc.reason}") from None
    if limits is not None and max(img.size) > limits.max_query_side:
        img.thumbnail((limits.max_query_side, limits.max_query_side), Image.Resampling.BILINEAR)
    return img


class SearchService:
    """Answers queries against one :class:`SearchIndex` (thread-safe for concurrent requests)."""

    def __init__(
        self,
        index: SearchIndex,
        embedder_factory: Callable[[], Any] | None = None,
        image_loader: Callable[[str], bytes] | None = None,
        thumbnail_side: int | None = None,
        max_k: int | None = None,
        thumbnail_cache: int = 2048,
        limits: QueryLimits | None = None,
        query_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        """``limits``: bounds on the work of one query (servers); None leaves queries unbounded
        (the operator's own ``strata search``). ``query_transform``: maps the embedder's output to
        the index's space (``pipeline.embed.reduce.query_transform``, for runs made with ``embed.dim``)."""
        self.index = index
        self._embedder_factory = embedder_factory
        self._query_transform = query_transform
        self._embedder = None
        self._embed_lock = threading.Lock()
        self._image_loader = image_loader
        self.thumbnail_side = int(conf_default("serve", "thumbnail_side") if thumbnail_side is None else thumbnail_side)
        self.max_k = int(conf_default("serve", "max_k") if max_k is None else max_k)
        self.limits = limits
        self._thumbnail = functools.lru_cache(maxsize=thumbnail_cache)(self._make_thumbnail)
        self._filter_values: tuple[int, dict] | None = None

    @classmethod
    def from_run(
        cls,
        run_dir: str | RunDir,
        nprobe: int | None = None,
        ef_search: int | None = None,
        use_gpu: bool | None = None,
        embed_overrides: dict | None = None,
        **kwargs: Any,
    ) -> SearchService:
        """Load ``<run_dir>/index`` and the embedder config recorded for the run."""
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(str(run_dir))
        index = SearchIndex.load(run.path(INDEX), nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu)
        embed_cfg = index.info.get("embed") or embed_config_of(run)
        factory = transform = None
        if embed_cfg is not None:
            from pipeline.embed.reduce import query_transform

            source = index.info.get("source")
            transform = query_transform(run if source in (None, str(EMBEDDINGS)) else source, dim=index.dim)
            embed_cfg = {**embed_cfg, **(embed_overrides or {})}

            def factory() -> Any:
                from pipeline.embed.embedder import Embedder

                return Embedder(embed_cfg)

        else:
            log.warning("run %s records no embed config: image queries are disabled", run.root)
        from pipeline.io.sources import load_image_bytes

        kwargs.setdefault("query_transform", transform)
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

    def embed_images(
        self, images: Sequence[Image.Image], cancelled: Callable[[], bool] | None = None, chunk: int = 4
    ) -> np.ndarray:
        """(N, D) embeddings of PIL images with the run's embedder (built on first use), ``chunk``
        images at a time; raises :class:`Cancelled` between chunks once ``cancelled()`` is true."""
        if self._embedder_factory is None:
            raise QueryError("image queries are unavailable: the run records no embedder config")
        embedder = self._get_embedder()
        parts = []
        for start in range(0, len(images), chunk):
            _check(cancelled)
            with self._embed_lock:
                parts.append(np.asarray(embedder.embed_pil(list(images[start : start + chunk])), dtype=np.float32))
        if not parts:
            return np.zeros((0, self.index.dim), np.float32)
        vectors = np.concatenate(parts)
        if self._query_transform is not None:
            try:
                vectors = self._query_transform(vectors)
            except ValueError as exc:
                raise QueryError(str(exc)) from exc
        return vectors

    # ---- queries -------------------------------------------------------------------------------
    def search(
        self,
        *,
        image: bytes | Image.Image | None = None,
        id: str | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        k: int | None = None,
        filters: Filters | None = None,
        tiles: str | int | None = None,
        per_tile_k: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> dict:
        """Top-``k`` neighbours of exactly one of ``image`` / ``id`` / ``vector``.

        ``tiles`` (image or id queries): grid spec such as ``"2x2"``; each tile retrieves
        ``per_tile_k`` (default ``k``) rows and the lists are merged by bucket voting.
        Returns ``{"results": [{rank, id, score, <carried columns>}], "k", "took_ms", "query"}``.
        ``cancelled``: polled between the expensive steps; once true the query raises :class:`Cancelled`.
        """
        k = conf_default("search", "query", "k") if k is None else k
        t0 = time.perf_counter()
        self.check_query(image=image, id=id, vector=vector, k=k, tiles=tiles)
        given = [name for name, v in (("image", image), ("id", id), ("vector", vector)) if v is not None]
        k = int(k)
        grids = parse_tiles(tiles)
        tiled = grids != [(1, 1)]
        query: dict[str, Any] = {"type": given[0], "tiles": tiles if tiled else None}

        if vector is not None:
            if tiled:
                raise QueryError("tiles apply to image or id queries, not to vectors")
            vectors = np.asarray(vector, dtype=np.float32).reshape(1, -1) if np.ndim(vector) == 1 else None
            if vectors is None or vectors.shape[1] != self.index.dim:
                raise QueryError(
                    f"vector must be a flat list of {self.index.dim} numbers, got shape {np.shape(vector)}"
                )
            if not np.isfinite(vectors).all():
                raise QueryError("vector contains NaN or infinite values")
        elif id is not None:
            query["id"] = id
            row = self._row(id)
            vectors = (
                self.index.vectors(row) if not tiled else self._image_vectors(self._image_of(id), grids, cancelled)
            )
        else:
            vectors = self._image_vectors(_decode(image, self.limits), grids, cancelled)

        _check(cancelled)
        try:
            if not tiled:
                rows, scores = self.index.search_rows(vectors, k, filters)
                rows, scores = rows[0], scores[0]
            else:
                tile_rows, tile_scores = self.index.search_rows(vectors, int(per_tile_k or k), filters)
                rows, votes = bucket_vote(tile_rows, vote_weights(tile_scores, self.index.cfg.metric), k)
                scores = votes / len(vectors)  # mean over tiles: on the scale of one tile's score
        except ValueError as exc:  # FilterError and shape errors
            raise QueryError(str(exc)) from None
        return {
            "results": self.index.records(rows, scores),
            "k": k,
            "took_ms": round(1000 * (time.perf_counter() - t0), 3),
            "query": query,
        }

    def check_query(
        self,
        *,
        image: bytes | Image.Image | None = None,
        id: str | None = None,
        vector: Any = None,
        k: Any = None,
        tiles: str | int | None = None,
        **_: Any,
    ) -> int:
        """The checks that need no decoding or embedding (one query kind, ``k``, tile limits, the
        image header's pixel count); raises :class:`QueryError` / :class:`LimitError`. Returns the
        number of tiles the query will embed (0: index work only)."""
        given = [name for name, v in (("image", image), ("id", id), ("vector", vector)) if v is not None]
        if len(given) != 1:
            raise QueryError(f"give exactly one of image, id or vector (got {given or 'none'})")
        k = conf_default("search", "query", "k") if k is None else k
        try:
            k = int(k)
        except (TypeError, ValueError, OverflowError):
            raise QueryError(f"k must be an integer, got {k!r}") from None
        if not 1 <= k <= self.max_k:
            raise QueryError(f"k must be between 1 and {self.max_k}, got {k}")
        try:
            grids = parse_tiles(tiles)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        self._check_tiles(grids)
        n_tiles = sum(r * c for r, c in grids)
        if isinstance(image, (bytes, bytearray)) and self.limits is not None:
            _check_header(bytes(image), self.limits)
        return n_tiles if image is not None or grids != [(1, 1)] else 0

    def _row(self, id: str) -> np.ndarray:
        try:
            return self.index.rows_of([id])
        except KeyError:
            raise UnknownIdError(f"unknown id {id!r}") from None

    def _check_tiles(self, grids: list[tuple[int, int]]) -> None:
        if self.limits is None:
            return
        n_tiles = sum(r * c for r, c in grids)
        if len(grids) > self.limits.max_grids:
            raise LimitError(
                f"{len(grids)} tile grids requested; the limit is {self.limits.max_grids} (serve limits.max_grids)"
            )
        if n_tiles > self.limits.max_tiles:
            raise LimitError(
                f"{n_tiles} tiles requested; the limit is {self.limits.max_tiles} per query (serve limits.max_tiles)"
            )

    def _image_vectors(
        self, image: Image.Image, grids: list[tuple[int, int]], cancelled: Callable[[], bool] | None = None
    ) -> np.ndarray:
        _check(cancelled)
        try:
            tiles = cut_tiles(image, grids)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        return self.embed_images(tiles, cancelled)

    # ---- images ----------------------------------------------------------------------------------
    def _image_of(self, id: str) -> Image.Image:
        return _decode(self.image_bytes(id), self.limits, what=f"indexed image {id!r}")

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

    # ---- browsing ------------------------------------------------------------------------------
    @property
    def filterable_columns(self) -> list[str]:
        """Carried columns a query may filter on (not ``id``, not the server-side ``uri``)."""
        return [c for c in self.index.meta.column_names if c not in ("id", "uri")]

    def items(self, offset: int = 0, limit: int = 48, filters: Filters | None = None) -> dict:
        """One page of indexed rows in index order (``id`` and carried columns, never ``uri``):
        ``{"items": [...], "total": rows matching filters, "offset", "limit"}``."""
        if offset < 0 or limit < 1:
            raise QueryError(f"offset must be >= 0 and limit >= 1, got offset={offset}, limit={limit}")
        meta = self.index.meta.select(["id", *self.filterable_columns])
        try:
            mask = filter_mask(meta, filters)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        rows = np.arange(meta.num_rows) if mask is None else np.flatnonzero(mask)
        page = meta.take(pa.array(rows[offset : offset + limit])).to_pylist()
        return {"items": page, "total": len(rows), "offset": offset, "limit": limit}

    def filter_values(self, max_values: int = 100) -> dict[str, dict[str, Any]]:
        """Distinct values of every filterable column (see :func:`pipeline.search.filters.filter_values`); cached."""
        key = int(max_values)
        if self._filter_values is None or self._filter_values[0] != key:
            self._filter_values = (key, filter_values(self.index.meta, self.filterable_columns, key))
        return self._filter_values[1]

    def describe(self) -> dict:
        return {**self.index.describe(), "image_queries": self.can_embed, "score": self.score_meaning()}

    def score_meaning(self) -> str:
        """What a hit's ``score`` is for this index (shown by the search page)."""
        cfg = self.index.cfg
        if cfg.metric == "ip":
            whole = (
                "cosine similarity of the two embeddings (1: same direction, 0: unrelated, -1: opposite)"
                if cfg.normalize
                else "inner product of the two embeddings (not normalised: no fixed range)"
            )
        else:
            whole = "minus the squared L2 distance of the two embeddings (0: identical)"
        tiled = (
            "1 / (1 + L2 distance)" if cfg.metric != "ip" else "cosine similarity" if cfg.normalize else "inner product"
        )
        return (
            f"score = {whole}. With tiles, score = the mean over the query's tiles of each tile's {tiled} with the "
            "image, counting 0 for a tile whose own top results missed it."
        )


def _check_header(data: bytes, limits: QueryLimits) -> None:
    """Refuse an image whose header declares more than ``max_query_pixels`` (nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # noqa: BLE001 - unreadable headers are reported by the decode step
        return
    if width * height > limits.max_query_pixels:
        raise LimitError(
            f"cannot use the uploaded image: too large: {width}x{height} > {limits.max_query_pixels} pixels "
            "(limit: serve limits.max_query_pixels)",
            status=413,
        )


def _check(cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and cancelled():
        raise Cancelled("query abandoned (client gone or out of time)")


def image_to_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode a PIL image (tests, clients)."""
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


__all__ = [
    "Cancelled",
    "LimitError",
    "QueryError",
    "QueryLimits",
    "SearchService",
    "UnknownIdError",
    "embed_config_of",
    "image_to_bytes",
]
