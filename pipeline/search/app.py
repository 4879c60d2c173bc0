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

import html
import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.search.routes import Gate, router
from pipeline.search.service import (
    SearchService,
)
from pipeline.search.settings import ServeSettings
from pipeline.security import (
    host_allowed,
    is_loopback,
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
    gate = Gate(settings)
    app.state.service, app.state.gate, app.state.pools = service, gate, gate.pools
    app.add_middleware(_Guard, settings=settings)
    app.include_router(router)

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


__all__ = ["ServeSettings", "create_app"]
