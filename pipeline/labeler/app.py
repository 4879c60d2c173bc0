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
from collections.abc import Callable
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.labeler import routes
from pipeline.labeler.grid import ranker_for_run
from pipeline.labeler.images import ThumbnailCache
from pipeline.labeler.routes import COOKIE, SESSION_COOKIE, STATIC_TYPES, Labeler
from pipeline.labeler.settings import LabelerSettings
from pipeline.labeler.store import LabelError, LabelStore
from pipeline.security import host_allowed, is_loopback

SESSION_HEADER = "x-strata-session"
_SESSION_MAX_AGE = 30 * 24 * 3600
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'",
}


def _static(name: str) -> str:
    return resources.files("pipeline.labeler").joinpath("static", name).read_text(encoding="utf-8")


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
    static = {name: _static(name) for name in STATIC_TYPES}

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
    app.state.labeler = Labeler(store, settings, cache, similar, pages, static)

    @app.exception_handler(LabelError)
    async def label_error(_: Request, exc: LabelError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    app.include_router(routes.pages)
    app.include_router(routes.api)
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
