"""The swipe labeler web app: a static page plus a small JSON API over a ``LabelStore``.

Routes (all but ``/login`` need the access token when one is set; 401 without it, 403 wrong):

    GET  /                 the labeling page          GET  /static/app.js, /static/app.css
    GET  /login            token form (public)        POST /login  (form field ``token``)
    GET  /api/config       labels, key bindings       GET  /api/progress
    POST /api/next         {annotator, n} -> leased items to show next
    POST /api/label        {annotator, id, label, request_id?}
    POST /api/undo         {annotator, request_id?} -> the id given back
    POST /api/release      {annotator, ids?} -> leases returned to the queue
    POST /api/page         {annotator, n?} -> a grid page: up to n similar leased items, each
                           with the label it is pre-marked with (``guess``)
    POST /api/page/label   {annotator, labels: {id: label}, request_id} -> the page, all or none
    POST /api/page/undo    {annotator, request_id?} -> the last page's ids and labels, undone
    GET  /api/image?id=    JPEG thumbnail of a catalog id (never a path)
    GET  /api/labels       current labels as JSON

The token may arrive as cookie ``strata_token``, header ``Authorization: Bearer <t>`` or, once,
as ``/?token=<t>`` (answered by setting the cookie and redirecting to a clean URL). A server bound
beyond loopback always has a token (``server.serve``); on loopback the ``Host`` header must be a
loopback name or in ``allowed_hosts`` (421 otherwise), which defeats DNS rebinding.

Annotator names are owned: the first session (cookie ``strata_session``, or header
``X-Strata-Session``) that uses a name claims it in the store, and any other session sending that
name gets 403, so label, undo, lease and release act only on the caller's own items. Each name
holds at most ``max_leased`` images at once, and at most ``max_annotators`` names exist.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.config import load_group
from pipeline.labeler.grid import ranker_for_run
from pipeline.labeler.images import ThumbnailCache
from pipeline.labeler.store import LabelError, LabelStore
from pipeline.security import host_allowed, is_loopback

COOKIE = "strata_token"
SESSION_COOKIE = "strata_session"
SESSION_HEADER = "x-strata-session"
_SESSION_MAX_AGE = 30 * 24 * 3600
_ANNOTATOR = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@ -]+$")
_ID = Field(min_length=1, max_length=1024)
_REQUEST_ID = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
_STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css"}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'",
}


@dataclass
class LabelerSettings:
    """What the app serves: how long leases last, how large images are, who may enter."""

    lease_seconds: float = field(default_factory=lambda: _yaml("lease_seconds"))
    prefetch: int = field(default_factory=lambda: _yaml("prefetch"))
    thumbnail_max_side: int = field(default_factory=lambda: _yaml("thumbnail_max_side"))
    cache_items: int = field(default_factory=lambda: _yaml("cache_items"))
    token: str | None = None
    title: str = "Strata swipe labeler"
    host: str = "127.0.0.1"  # the bind address (set by server.serve): decides the Host check
    allowed_hosts: list[str] = field(default_factory=lambda: _yaml("allowed_hosts"))
    max_leased: int = field(default_factory=lambda: _yaml("max_leased"))
    max_annotators: int = field(default_factory=lambda: _yaml("max_annotators"))
    max_body_kb: int = field(default_factory=lambda: _yaml("max_body_kb"))
    prompt: str | None = field(default_factory=lambda: _yaml("prompt"))
    reference: str | None = field(default_factory=lambda: _yaml("reference"))
    show_ids: bool = field(default_factory=lambda: _yaml("show_ids"))
    mode: str = field(default_factory=lambda: _yaml("mode"))
    grid_size: int = field(default_factory=lambda: _yaml("grid_size"))
    grid_guess: str | None = field(default_factory=lambda: _yaml("grid_guess"))
    neighbours_from: str | None = None  # a run directory: its embeddings (or clusters) group grid pages

    def check(self, labels: Sequence[str]) -> None:
        """Raise ``ValueError`` (one line, naming the setting) for settings the app cannot serve."""
        if self.mode not in ("single", "grid"):
            raise ValueError(f"labeler.mode must be single or grid, got {self.mode!r}")
        if self.mode == "grid" and not 1 <= self.grid_size <= min(64, self.max_leased):
            raise ValueError(
                f"labeler.grid_size must be 1..{min(64, self.max_leased)} (labeler.max_leased), got {self.grid_size}"
            )
        if self.grid_guess is not None and self.grid_guess not in labels:
            raise ValueError(f"labeler.grid_guess {self.grid_guess!r} is not one of the labels {list(labels)}")
        if self.prompt is not None and len(self.prompt) > 300:
            raise ValueError(f"labeler.prompt is {len(self.prompt)} characters, at most 300")


def _yaml(key: str):
    """A default of ``conf/labeler/default.yaml`` (its one source)."""
    return load_group("labeler/default")[key]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NextBody(_Body):
    annotator: str = _ANNOTATOR
    n: int = Field(default=4, ge=1, le=64)


class LabelBody(_Body):
    annotator: str = _ANNOTATOR
    id: str = _ID
    label: str = Field(min_length=1, max_length=64)
    request_id: str | None = _REQUEST_ID


class UndoBody(_Body):
    annotator: str = _ANNOTATOR
    request_id: str | None = _REQUEST_ID


class PageBody(_Body):
    annotator: str = _ANNOTATOR
    n: int | None = Field(default=None, ge=1, le=64)


class PageLabelBody(_Body):
    annotator: str = _ANNOTATOR
    labels: dict[Annotated[str, _ID], Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=64
    )
    request_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


class ReleaseBody(_Body):
    annotator: str = _ANNOTATOR
    ids: list[Annotated[str, _ID]] | None = Field(default=None, max_length=1024)


def _static(name: str) -> str:
    return resources.files("pipeline.labeler").joinpath("static", name).read_text(encoding="utf-8")


def key_bindings(labels: Sequence[str]) -> dict[str, str]:
    """Keyboard key -> label: arrows for the binary vocabulary, digits 1-9 for the others."""
    keys: dict[str, str] = {}
    arrows = {"positive": "ArrowRight", "negative": "ArrowLeft", "unsure": "ArrowDown"}
    for label in labels:
        if label in arrows:
            keys[arrows[label]] = label
    for digit, label in enumerate(labels[:9], start=1):
        keys[str(digit)] = label
    return keys


def create_app(store: LabelStore, settings: LabelerSettings | None = None) -> FastAPI:
    """The FastAPI app labeling ``store``'s queue (run it with uvicorn, see ``server.serve``)."""
    settings = settings or LabelerSettings()
    settings.check(store.labels)
    if settings.token is None and not is_loopback(settings.host):
        raise ValueError(
            f"serving on {settings.host!r} (beyond loopback) requires a token: pipeline.security.access_token makes one"
        )
    cache = ThumbnailCache(store.uri, settings.thumbnail_max_side, settings.cache_items)
    similar = ranker_for_run(settings.neighbours_from) if settings.neighbours_from else None
    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None, openapi_url=None)
    token = settings.token
    pages = {name: _static(name) for name in ("index.html", "login.html")}
    static = {name: _static(name) for name in _STATIC_TYPES}

    any_host = token is not None and not is_loopback(settings.host)

    def presented_token(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def gate(request: Request) -> Response | None:
        """The answer for a request that may not pass (None: let it through)."""
        if not host_allowed(request.headers.get("host"), settings.allowed_hosts, any_host):
            return JSONResponse(
                {"detail": "unknown Host header: add the name to labeler.allowed_hosts"}, status_code=421
            )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_body_kb * 1024:
            return JSONResponse(
                {"detail": f"request body larger than {settings.max_body_kb} KiB (labeler.max_body_kb)"},
                status_code=413,
            )
        if token is None or request.url.path == "/login":
            return None
        query_token = request.query_params.get("token")
        if request.url.path == "/" and query_token is not None and _same(query_token, token):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        given = presented_token(request)
        if given is None:
            return _denied(request, 401, "access token required", pages["login.html"])
        if not _same(given, token):
            return _denied(request, 403, "wrong access token", pages["login.html"])
        return None

    app.add_middleware(_Guard, gate=gate, max_body=settings.max_body_kb * 1024)

    @app.exception_handler(LabelError)
    async def label_error(_: Request, exc: LabelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(pages["index.html"])

    @app.get("/login", response_class=HTMLResponse)
    def login_page() -> HTMLResponse:
        return HTMLResponse(pages["login.html"])

    @app.post("/login")
    def login(token_field: Annotated[str, Form(alias="token", max_length=256)]) -> Response:
        if token is None:
            return RedirectResponse("/", status_code=303)
        if not hmac.compare_digest(token_field.encode(), token.encode()):
            return HTMLResponse(pages["login.html"], status_code=403)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in static:  # a fixed whitelist: no client string reaches the filesystem
            return JSONResponse({"detail": "not found"}, status_code=404)
        return Response(static[name], media_type=_STATIC_TYPES[name])

    @app.get("/api/config")
    def config() -> dict:
        return {
            "labels": list(store.labels),
            "keys": key_bindings(store.labels),
            "prefetch": settings.prefetch,
            "lease_seconds": settings.lease_seconds,
            "title": settings.title,
            "prompt": settings.prompt,
            "reference": settings.reference,
            "show_ids": settings.show_ids,
            "mode": settings.mode,
            "grid_size": settings.grid_size,
        }

    @app.get("/api/progress")
    def progress(batch: Annotated[str | None, Query(max_length=256)] = None) -> dict:
        return store.progress(batch).as_dict()

    def own(request: Request, annotator: str) -> None:
        """Refuse (403) a name that another session owns (the session key is set by ``_Guard``)."""
        store.claim(annotator, request.scope["state"][SESSION_COOKIE], settings.max_annotators)

    @app.post("/api/next")
    def next_items(body: NextBody, request: Request) -> dict:
        own(request, body.annotator)
        ids = store.lease(body.annotator, body.n, settings.lease_seconds, max_held=settings.max_leased)
        return {"items": [{"id": i} for i in ids], "progress": store.progress().as_dict()}

    def labeled(event: Any, duplicate: bool) -> dict:
        """The answer to a label or an undo: the event and the store's progress."""
        return {
            "seq": event.seq,
            "id": event.id,
            "label": event.label,
            "duplicate": duplicate,
            "progress": store.progress().as_dict(),
        }

    @app.post("/api/label")
    def label(body: LabelBody, request: Request) -> dict:
        own(request, body.annotator)
        return labeled(*store.label(body.id, body.label, body.annotator, body.request_id))

    @app.post("/api/undo")
    def undo(body: UndoBody, request: Request) -> dict:
        own(request, body.annotator)
        result = store.undo(body.annotator, body.request_id, settings.lease_seconds)
        if result is None:
            raise LabelError("nothing to undo", status=404)
        return labeled(*result)

    @app.post("/api/page")
    def page(body: PageBody, request: Request) -> dict:
        n = body.n or settings.grid_size
        if n > settings.max_leased:
            raise LabelError(f"a page holds at most {settings.max_leased} images (labeler.max_leased), asked {n}", 422)
        own(request, body.annotator)
        ids = store.lease(body.annotator, n, settings.lease_seconds, max_held=settings.max_leased, similar=similar)
        guesses = store.guesses(ids)
        return {
            "items": [{"id": i, "guess": guesses.get(i, settings.grid_guess or store.labels[0])} for i in ids],
            "progress": store.progress().as_dict(),
        }

    @app.post("/api/page/label")
    def page_label(body: PageLabelBody, request: Request) -> dict:
        own(request, body.annotator)
        events, duplicate = store.label_page(body.labels, body.annotator, body.request_id)
        return {
            "page": body.request_id,
            "n": len(events),
            "duplicate": duplicate,
            "progress": store.progress().as_dict(),
        }

    @app.post("/api/page/undo")
    def page_undo(body: UndoBody, request: Request) -> dict:
        own(request, body.annotator)
        result = store.undo_page(body.annotator, body.request_id, settings.lease_seconds)
        if result is None:
            raise LabelError("nothing to undo", status=404)
        events, duplicate = result
        return {
            "items": [{"id": e.id, "guess": e.label} for e in events],
            "duplicate": duplicate,
            "progress": store.progress().as_dict(),
        }

    @app.post("/api/release")
    def release(body: ReleaseBody, request: Request) -> dict:
        own(request, body.annotator)
        return {"released": store.release(body.annotator, body.ids)}

    @app.get("/api/image")
    def image(item_id: Annotated[str, Query(alias="id", min_length=1, max_length=1024)]) -> Response:
        try:
            jpeg = cache.get(item_id)
        except (OSError, ValueError) as exc:
            return JSONResponse(
                {"detail": f"image {item_id!r} could not be read: {type(exc).__name__}"}, status_code=502
            )
        if jpeg is None:
            return JSONResponse({"detail": "unknown id"}, status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/labels")
    def labels() -> dict:
        return {"labels": store.current_labels()}

    return app


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class _Guard:
    """Pure ASGI middleware: token check and security headers (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, gate: Callable[[Request], Response | None], max_body: int):
        self.app = app
        self.gate = gate
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]
        request = Request(scope)
        session = request.headers.get(SESSION_HEADER) or request.cookies.get(SESSION_COOKIE)
        if not session:  # every answer (errors too) hands a new client its session key
            session = secrets.token_urlsafe(24)
            cookie = f"{SESSION_COOKIE}={session}; Max-Age={_SESSION_MAX_AGE}; Path=/; HttpOnly; SameSite=strict"
            extra.append((b"set-cookie", cookie.encode()))
        scope.setdefault("state", {})[SESSION_COOKIE] = session[:256]
        if path.startswith("/api/") and path != "/api/image":
            extra.append((b"cache-control", b"no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in present or k == b"set-cookie"),
                ]
            await send(message)

        denied = self.gate(request)
        if denied is not None:
            await denied(scope, receive, send_with_headers)
        else:
            await self.app(scope, self._bounded(receive), send_with_headers)

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that ends a body sent without ``Content-Length`` (chunked) at ``max_body``
        bytes: the truncated body then fails to parse (4xx) instead of filling memory."""
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        return bounded


def _denied(request: Request, status: int, message: str, login_html: str) -> Response:
    if request.url.path.startswith(("/api/", "/static/")) or request.method != "GET":
        return JSONResponse({"detail": message}, status_code=status)
    return HTMLResponse(login_html, status_code=status)
