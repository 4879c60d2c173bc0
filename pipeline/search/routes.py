"""The search API's routes (one :class:`fastapi.APIRouter`) and how a request is bounded and read
(:class:`Gate`); :func:`pipeline.search.app.create_app` mounts them over a service.

Every request is bounded: the body size (413), the JSON nesting depth (400), tiles and query-image
pixels; queries and thumbnails run on ``workers`` threads with at most ``queue`` more waiting (else
503 at once), a request still unanswered after ``request_timeout_s`` gets 503, and a query whose
client has gone, or whose time is up, stops at its next step.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from pipeline.search.pool import WorkPool
from pipeline.search.service import Cancelled, LimitError, QueryError, SearchService, UnknownIdError
from pipeline.security import json_depth

if TYPE_CHECKING:
    from pipeline.search.settings import ServeSettings

log = logging.getLogger(__name__)
router = APIRouter()


class SearchRequest(BaseModel):
    """JSON body of ``POST /search``: exactly one of ``id``, ``vector``, ``image_base64``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="query by the id of an indexed image")
    vector: list[float] | None = Field(None, description="query by an embedding vector of the index dimension")
    image_base64: str | None = Field(None, description="query by an encoded image (base64)")
    k: int = Field(10, ge=1, description="number of results")
    filters: dict[str, Any] | None = Field(
        None,
        description='conditions on carried columns, e.g. {"product": "S2", "date": {"gte": "2020-01-01"}}',
        examples=[{"label": ["forest", "river"]}],
    )
    tiles: str | None = Field(None, description="tile grid for image/id queries, e.g. '2x2' or '1x1,2x2'")


class SearchHit(BaseModel):
    model_config = ConfigDict(extra="allow")

    rank: int
    id: str
    score: float


class SearchResponse(BaseModel):
    results: list[SearchHit]
    k: int
    took_ms: float
    query: dict[str, Any]


_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "query image file"},
        "id": {"type": "string"},
        "vector": {"type": "string", "description": "JSON list of floats"},
        "k": {"type": "integer", "default": 10},
        "filters": {"type": "string", "description": "JSON object of conditions"},
        "tiles": {"type": "string", "description": "e.g. 2x2"},
    },
}


def _json(text: bytes | str, what: str, max_depth: int) -> Any:
    """Parsed JSON of a body or form field, refused before parsing when nested too deeply."""
    depth = json_depth(text)
    if depth > max_depth:
        raise HTTPException(
            400, f"{what} is nested {depth} levels deep; the limit is {max_depth} (serve limits.max_json_depth)"
        )
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise HTTPException(400, f"{what} is not valid JSON") from None


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10])


class Gate:
    """How one app bounds and reads requests: its :class:`ServeSettings` and two work pools
    (index-only work - queries by id or vector - never waits behind image embedding)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.pools = {
            "index": WorkPool(settings.workers, settings.queue, "strata-index"),
            "embed": WorkPool(settings.workers, settings.queue, "strata-embed"),
        }

    async def run_bounded(self, request: Request, job: Callable[[Callable[[], bool]], Any], cost: int) -> Any:
        """Run ``job(cancelled)`` on a pool (``cost`` tiles to embed; 0: the index pool): 503 when
        full or out of time; ``cancelled()`` turns true once the client disconnects or time is up."""
        stop = threading.Event()
        pool = self.pools["embed"] if cost else self.pools["index"]
        future = pool.submit(lambda: job(stop.is_set), cost)
        if future is None:
            raise HTTPException(
                503,
                f"server busy: {pool.workers} requests running and {pool.queue} waiting (serve limits.workers, limits.queue); retry later",
                headers={"Retry-After": "1"},
            )
        waiting = asyncio.wrap_future(future)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=min(0.25, max(0.0, deadline - loop.time())))
                if done:
                    return waiting.result()
                if loop.time() >= deadline:
                    raise HTTPException(
                        503,
                        f"request took longer than {self.settings.request_timeout_s:g} s (serve limits.request_timeout_s); it was stopped",
                    )
                if await request.is_disconnected():
                    raise HTTPException(499, "client disconnected")
        finally:
            stop.set()
            waiting.cancel()  # a job still waiting in the queue never starts; a running one is not awaited

    async def body_of(self, request: Request) -> bytes:
        """The request body, refused (413) as soon as it grows past ``max_body_bytes``."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.settings.max_body_bytes:
                raise HTTPException(
                    413, f"request body larger than {self.settings.max_body_bytes} bytes (serve limits.max_body_mb)"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # starlette parses forms from the cached body
        return body

    async def from_form(self, request: Request) -> dict[str, Any]:
        await self.body_of(request)
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - any multipart parser failure is the client's input
            raise HTTPException(400, f"malformed form data: {type(exc).__name__}") from None
        upload = form.get("image")
        image = None
        if isinstance(upload, UploadFile):
            image = await upload.read(self.settings.max_upload_bytes + 1)
            if len(image) > self.settings.max_upload_bytes:
                raise HTTPException(
                    413, f"image larger than {self.settings.max_upload_bytes} bytes (serve max_upload_mb)"
                )
            if not image:
                raise HTTPException(400, "the uploaded image is empty")
        elif upload is not None:
            raise HTTPException(400, "form field 'image' must be a file upload")

        def text(name: str) -> str | None:
            value = form.get(name)
            if value is not None and not isinstance(value, str):
                raise HTTPException(400, f"form field {name!r} must be text, not a file")
            return value or None

        vector, filters = text("vector"), text("filters")
        vector = None if vector is None else _json(vector, "form field 'vector'", self.settings.max_json_depth)
        filters = None if filters is None else _json(filters, "form field 'filters'", self.settings.max_json_depth)
        if vector is not None and not (
            isinstance(vector, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector)
        ):
            raise HTTPException(400, "form field 'vector' must be a JSON list of numbers")
        if filters is not None and not isinstance(filters, dict):
            raise HTTPException(400, "form field 'filters' must be a JSON object")
        return {
            "image": image,
            "id": text("id"),
            "vector": vector,
            "k": text("k") or 10,
            "filters": filters,
            "tiles": text("tiles"),
        }

    async def from_json(self, request: Request) -> dict[str, Any]:
        body = _json(await self.body_of(request), "request body", self.settings.max_json_depth)
        try:
            req = SearchRequest.model_validate(body)
        except ValidationError as exc:
            raise HTTPException(422, f"invalid search request: {_validation_message(exc)}") from None
        image = None
        if req.image_base64 is not None:
            try:
                image = base64.b64decode(req.image_base64, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPException(400, "image_base64 is not valid base64") from None
            if len(image) > self.settings.max_upload_bytes:
                raise HTTPException(
                    413, f"image larger than {self.settings.max_upload_bytes} bytes (serve max_upload_mb)"
                )
        return {
            "image": image,
            "id": req.id,
            "vector": req.vector,
            "k": req.k,
            "filters": req.filters,
            "tiles": req.tiles,
        }

    def public(self, result: dict) -> dict:
        if not self.settings.expose_uri:
            for hit in result["results"]:
                hit.pop("uri", None)
        return result


def _parts(request: Request) -> tuple[SearchService, Gate]:
    return request.app.state.service, request.app.state.gate


@router.post(
    "/search",
    response_model=SearchResponse,
    summary="Nearest neighbours of an image, an indexed id or a vector",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": SearchRequest.model_json_schema()},
                "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
            },
        }
    },
    responses={
        400: {"description": "malformed query, or above a limit"},
        404: {"description": "unknown id"},
        413: {"description": "body, image or image pixels above the limit"},
        503: {"description": "server busy or request out of time"},
    },
)
async def search(request: Request) -> dict:
    service, gate = _parts(request)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        args = await gate.from_form(request)
    elif ctype.startswith("application/json"):
        args = await gate.from_json(request)
    else:
        raise HTTPException(415, "send application/json or multipart/form-data")
    try:
        cost = service.check_query(**args)  # cheap refusals never take a worker
        return gate.public(
            await gate.run_bounded(request, lambda cancelled: service.search(**args, cancelled=cancelled), cost)
        )
    except UnknownIdError as exc:
        raise HTTPException(404, str(exc)) from None
    except LimitError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    except Cancelled:
        raise HTTPException(
            503, f"request took longer than {gate.settings.request_timeout_s:g} s (serve limits.request_timeout_s)"
        ) from None


@router.get(
    "/images/{image_id:path}",
    summary="JPEG thumbnail of an indexed image, by id",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id or image unavailable"}},
)
async def image(request: Request, image_id: str, size: int | None = Query(None, ge=16, le=1024)) -> Response:
    service, gate = _parts(request)
    try:
        data = await gate.run_bounded(request, lambda _: service.thumbnail(image_id, size), cost=1)
    except UnknownIdError as exc:
        raise HTTPException(404, str(exc)) from None
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
    except (LookupError, OSError, ValueError) as exc:
        log.warning("thumbnail of %r unavailable: %s", image_id, exc)
        raise HTTPException(404, f"image for id {image_id!r} is unavailable") from None
    return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/items",
    summary="One page of indexed ids (and carried columns), in index order",
    responses={400: {"description": "bad page or filters"}},
)
async def items(
    request: Request,
    offset: int = Query(0, ge=0, description="rows to skip"),
    limit: int = Query(48, ge=1, description="rows per page (at most serve limits.max_page)"),
    filters: str | None = Query(
        None, description='JSON object of conditions, as in POST /search, e.g. {"label": "forest"}'
    ),
) -> dict:
    service, gate = _parts(request)
    settings = gate.settings
    if limit > settings.max_page:
        raise HTTPException(400, f"limit {limit} is above {settings.max_page} rows per page (serve limits.max_page)")
    conditions = None if not filters else _json(filters, "query parameter 'filters'", settings.max_json_depth)
    if conditions is not None and not isinstance(conditions, dict):
        raise HTTPException(400, "query parameter 'filters' must be a JSON object")
    try:
        return await gate.run_bounded(request, lambda _: service.items(offset, limit, conditions), cost=0)
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/filters", summary="Distinct values of every filterable carried column")
async def filter_choices(request: Request) -> dict:
    service, gate = _parts(request)
    most = gate.settings.max_filter_values
    values = await gate.run_bounded(request, lambda _: service.filter_values(most), cost=0)
    return {"columns": values, "max_values": most}


@router.get("/healthz", summary="Liveness and index summary")
async def healthz(request: Request) -> dict:
    return {"status": "ok", **request.app.state.service.describe()}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index_page() -> HTMLResponse:
    return HTMLResponse(resources.files("pipeline.search").joinpath("static/index.html").read_text(encoding="utf-8"))
