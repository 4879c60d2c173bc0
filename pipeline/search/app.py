"""HTTP API and search page (FastAPI) over a :class:`~pipeline.search.service.SearchService`.

- ``POST /search``: JSON ``{"id" | "vector" | "image_base64", "k", "filters", "tiles"}`` or a
  multipart form (``image`` file, same other fields; ``vector``/``filters`` as JSON text);
- ``GET /images/{id}``: JPEG thumbnail of an indexed image, looked up by id only (never by path);
- ``GET /items?offset=&limit=&filters=``: one page of indexed ids with their carried columns
  (``limit`` at most ``limits.max_page``): the page's landing gallery;
- ``GET /filters``: distinct values of every filterable column (at most ``limits.max_filter_values``
  each), for the page's filter dropdowns;
- ``GET /healthz``: index summary (and what a score means); ``GET /``: the search page; ``/docs``: the API described in a
  self-contained page (no script from a CDN: it works offline), ``/openapi.json``.

Bad requests get a 4xx with ``{"detail": "<message>"}``; a message about a limit names it.

Every request is bounded (``ServeSettings``, from ``conf/serve.yaml``): the body size (413), the
JSON nesting depth (400), tiles and query-image pixels (:class:`QueryLimits`); queries and
thumbnails run on ``workers`` threads with at most ``queue`` more waiting (else 503 at once), a
request still unanswered after ``request_timeout_s`` gets 503, and a query whose client has gone,
or whose time is up, stops at its next step. Who may ask: the ``Host`` header must be a loopback
name or in ``allowed_hosts``, and a server bound beyond loopback requires its token
(``Authorization: Bearer``, or the cookie set by opening ``/?token=...``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import itertools
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import resources
from queue import PriorityQueue
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.config import load_group
from pipeline.search.service import (
    Cancelled,
    LimitError,
    QueryError,
    QueryLimits,
    SearchService,
    UnknownIdError,
)
from pipeline.security import (
    host_allowed,
    is_loopback,
    json_depth,
    presented_token,
    same_secret,
)

log = logging.getLogger(__name__)

COOKIE = "strata_search_token"
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


@dataclass(frozen=True)
class ServeSettings:
    """How ``strata serve`` answers (``conf/serve.yaml``: every default lives there).

    ``host``: the bind address (decides whether a token is required and which ``Host`` headers pass);
    ``token``: required from clients when set; ``allowed_hosts``: ``Host`` names accepted besides
    loopback ones; ``expose_uri``: include each hit's server-side ``uri``; ``docs``: serve ``/docs``.
    """

    host: str
    token: str | None
    allowed_hosts: tuple[str, ...]
    expose_uri: bool
    docs: bool
    max_upload_bytes: int
    max_body_bytes: int
    max_json_depth: int
    max_page: int
    max_filter_values: int
    workers: int
    queue: int
    request_timeout_s: float
    query: QueryLimits

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> ServeSettings:
        """From a ``conf/serve.yaml``-shaped mapping (``limits`` holds the per-request bounds)."""
        limits = cfg["limits"]
        return cls(
            host=str(cfg["host"]),
            token=cfg["token"] or None,
            allowed_hosts=tuple(cfg["allowed_hosts"] or ()),
            expose_uri=bool(cfg["expose_uri"]),
            docs=bool(cfg["docs"]),
            max_upload_bytes=int(float(cfg["max_upload_mb"]) * 2**20),
            max_body_bytes=int(float(limits["max_body_mb"]) * 2**20),
            max_json_depth=int(limits["max_json_depth"]),
            max_page=int(limits["max_page"]),
            max_filter_values=int(limits["max_filter_values"]),
            workers=int(limits["workers"]),
            queue=int(limits["queue"]),
            request_timeout_s=float(limits["request_timeout_s"]),
            query=QueryLimits.from_config(limits),
        )

    @classmethod
    def defaults(cls, **overrides: Any) -> ServeSettings:
        """The settings of ``conf/serve.yaml`` as shipped (tests, library users), with ``overrides``."""
        cfg = load_group("serve")
        limits = {**cfg["limits"], **{k: overrides.pop(k) for k in list(overrides) if k in cfg["limits"]}}
        return cls.from_config({**cfg, **overrides, "limits": limits})


class WorkPool:
    """``workers`` threads and at most ``queue`` waiting jobs; a job beyond that is refused at once.

    Waiting jobs run cheapest first (``cost``: tiles to embed), first come first served within a
    cost, so a stream of expensive queries cannot make cheap ones wait behind all of them. A slot is
    freed when its job really ends, not when its client stops waiting, so work that is being
    abandoned still counts: the CPU the server hands out stays bounded.
    """

    def __init__(self, workers: int, queue: int, name: str = "strata-search"):
        self.workers, self.queue = workers, queue
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._jobs: PriorityQueue = PriorityQueue()
        self._order = itertools.count()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable[[], Any], cost: int = 0) -> Future | None:
        """The job's future, or None when ``workers + queue`` jobs are already admitted."""
        if not self._slots.acquire(blocking=False):
            return None
        future: Future = Future()
        future.add_done_callback(lambda _: self._slots.release())
        self._jobs.put((cost, next(self._order), future, fn))
        return future

    def _work(self) -> None:
        while True:
            _, _, future, fn = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its client gave up while it waited
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)


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


def create_app(service: SearchService, settings: ServeSettings | None = None, title: str = "Strata search") -> FastAPI:
    """The FastAPI application answering queries with ``service`` under ``settings``
    (``ServeSettings.defaults()`` when None). Sets ``service.limits`` to ``settings.query``."""
    settings = settings or ServeSettings.defaults()
    if settings.token is None and not is_loopback(settings.host):
        raise ValueError(
            f"serving on {settings.host!r} (beyond loopback) requires a token: pipeline.security.access_token makes one"
        )
    service.limits = settings.query
    app = FastAPI(
        title=title,
        description="Nearest-neighbour search over a Strata run's embeddings (query by image, id or vector).",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
    )
    page = resources.files("pipeline.search").joinpath("static/index.html").read_text(encoding="utf-8")
    # index-only work (queries by id or vector) never waits behind image embedding
    pools = {
        "index": WorkPool(settings.workers, settings.queue, "strata-index"),
        "embed": WorkPool(settings.workers, settings.queue, "strata-embed"),
    }
    app.state.pools = pools
    app.add_middleware(_Guard, settings=settings)

    async def run_bounded(request: Request, job: Callable[[Callable[[], bool]], Any], cost: int) -> Any:
        """Run ``job(cancelled)`` on a pool (``cost`` tiles to embed; 0: the index pool): 503 when
        full or out of time; ``cancelled()`` turns true once the client disconnects or time is up."""
        stop = threading.Event()
        pool = pools["embed"] if cost else pools["index"]
        future = pool.submit(lambda: job(stop.is_set), cost)
        if future is None:
            raise HTTPException(
                503,
                f"server busy: {pool.workers} requests running and {pool.queue} waiting (serve limits.workers, limits.queue); retry later",
                headers={"Retry-After": "1"},
            )
        waiting = asyncio.wrap_future(future)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout_s
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=min(0.25, max(0.0, deadline - loop.time())))
                if done:
                    return waiting.result()
                if loop.time() >= deadline:
                    raise HTTPException(
                        503,
                        f"request took longer than {settings.request_timeout_s:g} s (serve limits.request_timeout_s); it was stopped",
                    )
                if await request.is_disconnected():
                    raise HTTPException(499, "client disconnected")
        finally:
            stop.set()
            waiting.cancel()  # a job still waiting in the queue never starts; a running one is not awaited

    async def body_of(request: Request) -> bytes:
        """The request body, refused (413) as soon as it grows past ``max_body_bytes``."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise HTTPException(
                    413, f"request body larger than {settings.max_body_bytes} bytes (serve limits.max_body_mb)"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        request._body = body  # starlette parses forms from the cached body
        return body

    async def from_form(request: Request) -> dict[str, Any]:
        await body_of(request)
        try:
            form = await request.form(max_files=1, max_fields=16)
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - any multipart parser failure is the client's input
            raise HTTPException(400, f"malformed form data: {type(exc).__name__}") from None
        upload = form.get("image")
        image = None
        if isinstance(upload, UploadFile):
            image = await upload.read(settings.max_upload_bytes + 1)
            if len(image) > settings.max_upload_bytes:
                raise HTTPException(413, f"image larger than {settings.max_upload_bytes} bytes (serve max_upload_mb)")
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
        vector = None if vector is None else _json(vector, "form field 'vector'", settings.max_json_depth)
        filters = None if filters is None else _json(filters, "form field 'filters'", settings.max_json_depth)
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

    async def from_json(request: Request) -> dict[str, Any]:
        body = _json(await body_of(request), "request body", settings.max_json_depth)
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
            if len(image) > settings.max_upload_bytes:
                raise HTTPException(413, f"image larger than {settings.max_upload_bytes} bytes (serve max_upload_mb)")
        return {
            "image": image,
            "id": req.id,
            "vector": req.vector,
            "k": req.k,
            "filters": req.filters,
            "tiles": req.tiles,
        }

    def public(result: dict) -> dict:
        if not settings.expose_uri:
            for hit in result["results"]:
                hit.pop("uri", None)
        return result

    @app.post(
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
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            args = await from_form(request)
        elif ctype.startswith("application/json"):
            args = await from_json(request)
        else:
            raise HTTPException(415, "send application/json or multipart/form-data")
        try:
            cost = service.check_query(**args)  # cheap refusals never take a worker
            return public(
                await run_bounded(request, lambda cancelled: service.search(**args, cancelled=cancelled), cost)
            )
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        except LimitError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except Cancelled:
            raise HTTPException(
                503, f"request took longer than {settings.request_timeout_s:g} s (serve limits.request_timeout_s)"
            ) from None

    @app.get(
        "/images/{image_id:path}",
        summary="JPEG thumbnail of an indexed image, by id",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id or image unavailable"}},
    )
    async def image(request: Request, image_id: str, size: int | None = Query(None, ge=16, le=1024)) -> Response:
        try:
            data = await run_bounded(request, lambda _: service.thumbnail(image_id, size), cost=1)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except (LookupError, OSError, ValueError) as exc:
            log.warning("thumbnail of %r unavailable: %s", image_id, exc)
            raise HTTPException(404, f"image for id {image_id!r} is unavailable") from None
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get(
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
        if limit > settings.max_page:
            raise HTTPException(
                400, f"limit {limit} is above {settings.max_page} rows per page (serve limits.max_page)"
            )
        conditions = None if not filters else _json(filters, "query parameter 'filters'", settings.max_json_depth)
        if conditions is not None and not isinstance(conditions, dict):
            raise HTTPException(400, "query parameter 'filters' must be a JSON object")
        try:
            return await run_bounded(request, lambda _: service.items(offset, limit, conditions), cost=0)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/filters", summary="Distinct values of every filterable carried column")
    async def filter_choices(request: Request) -> dict:
        values = await run_bounded(request, lambda _: service.filter_values(settings.max_filter_values), cost=0)
        return {"columns": values, "max_values": settings.max_filter_values}

    @app.get("/healthz", summary="Liveness and index summary")
    async def healthz() -> dict:
        return {"status": "ok", **service.describe()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    if settings.docs:

        @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
        async def docs() -> HTMLResponse:
            return HTMLResponse(_docs_page(app.openapi()))

    return app


def _docs_page(spec: dict) -> str:
    """The OpenAPI spec as one self-contained HTML page (no external script, style or font)."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(spec['info']['title'])} API</title>",
        "<style>body{font:14px sans-serif;max-width:60em;margin:2em auto}pre{background:#f4f4f4;padding:.5em;overflow:auto}</style>",
        f"<h1>{html.escape(spec['info']['title'])}</h1><p>{html.escape(spec['info'].get('description', ''))}</p>",
        "<p>Machine-readable: <a href='openapi.json'>openapi.json</a></p>",
    ]
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            parts.append(f"<h2>{method.upper()} {html.escape(path)}</h2><p>{html.escape(op.get('summary', ''))}</p>")
            for ctype, body in (op.get("requestBody", {}).get("content") or {}).items():
                parts.append(
                    f"<h3>{html.escape(ctype)}</h3><pre>{html.escape(json.dumps(body.get('schema', {}), indent=1))}</pre>"
                )
            codes = ", ".join(
                f"{c}: {html.escape(r.get('description', ''))}" for c, r in op.get("responses", {}).items()
            )
            parts.append(f"<p>Responses: {codes}</p>")
    return "\n".join(parts)


class _Guard:
    """Pure ASGI middleware in front of every route: ``Host`` allowlist, access token, body size
    announced by ``Content-Length``, and security headers on every answer."""

    def __init__(self, app: ASGIApp, settings: ServeSettings):
        self.app = app
        self.settings = settings
        self.any_host = settings.token is not None and not is_loopback(settings.host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in _SECURITY_HEADERS if k not in present),
                ]
            await send(message)

        denied = self.check(Request(scope))
        await (denied or self.app)(scope, receive, send_with_headers)

    def check(self, request: Request) -> Response | None:
        s = self.settings
        if not host_allowed(request.headers.get("host"), s.allowed_hosts, self.any_host):
            return JSONResponse({"detail": "unknown Host header: add the name to serve allowed_hosts"}, status_code=421)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > s.max_body_bytes:
            return JSONResponse(
                {"detail": f"request body larger than {s.max_body_bytes} bytes (serve limits.max_body_mb)"},
                status_code=413,
            )
        if s.token is None:
            return None
        query_token = request.query_params.get("token")
        if request.url.path == "/" and same_secret(query_token, s.token):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, s.token, httponly=True, samesite="strict")
            return response
        given = presented_token(request.headers, request.cookies, COOKIE)
        if given is None:
            return JSONResponse(
                {
                    "detail": "access token required: open the URL printed by strata serve, or send Authorization: Bearer <token>"
                },
                status_code=401,
            )
        if not same_secret(given, s.token):
            return JSONResponse({"detail": "wrong access token"}, status_code=403)
        return None


__all__ = ["SearchRequest", "SearchResponse", "ServeSettings", "WorkPool", "create_app"]
