"""The swipe labeler's routes: the pages (``pages``: index, login, static files) and the JSON API
(``api``), two :class:`fastapi.APIRouter` that :func:`pipeline.labeler.app.create_app` mounts; each
route finds the store and settings in the app's :class:`Labeler` state."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from pipeline.labeler.images import ThumbnailCache
from pipeline.labeler.store import LabelError, LabelStore

if TYPE_CHECKING:
    from pipeline.labeler.settings import LabelerSettings

COOKIE = "strata_token"
SESSION_COOKIE = "strata_session"
STATIC_TYPES = {"app.js": "text/javascript", "app.css": "text/css"}
_ANNOTATOR = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@ -]+$")
_ID = Field(min_length=1, max_length=1024)
_REQUEST_ID = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
pages = APIRouter()
api = APIRouter()


@dataclass(frozen=True)
class Labeler:
    """What the routes of one app share: the store, its settings, thumbnails, the page ranker and
    the static texts."""

    store: LabelStore
    settings: LabelerSettings
    cache: ThumbnailCache
    similar: Callable[..., Any] | None
    pages: dict[str, str]
    static: dict[str, str]


def _state(request: Request) -> Labeler:
    return request.app.state.labeler


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


@pages.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    return HTMLResponse(_state(request).pages["index.html"])


@pages.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return HTMLResponse(_state(request).pages["login.html"])


@pages.post("/login")
def login(request: Request, token_field: Annotated[str, Form(alias="token", max_length=256)]) -> Response:
    state = _state(request)
    token = state.settings.token
    if token is None:
        return RedirectResponse("/", status_code=303)
    if not hmac.compare_digest(token_field.encode(), token.encode()):
        return HTMLResponse(state.pages["login.html"], status_code=403)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return response


@pages.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@pages.get("/static/{name}")
def static_file(request: Request, name: str) -> Response:
    static = _state(request).static
    if name not in static:  # a fixed whitelist: no client string reaches the filesystem
        return JSONResponse({"detail": "not found"}, status_code=404)
    return Response(static[name], media_type=STATIC_TYPES[name])


@api.get("/api/config")
def config(request: Request) -> dict:
    store, settings = _state(request).store, _state(request).settings
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


@api.get("/api/progress")
def progress(request: Request, batch: Annotated[str | None, Query(max_length=256)] = None) -> dict:
    return _state(request).store.progress(batch).as_dict()


def own(request: Request, annotator: str) -> Labeler:
    """The app's state, after refusing (403) a name that another session owns (the session key is
    set by the app's guard middleware)."""
    state = _state(request)
    state.store.claim(annotator, request.scope["state"][SESSION_COOKIE], state.settings.max_annotators)
    return state


@api.post("/api/next")
def next_items(body: NextBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store, settings = state.store, state.settings
    ids = store.lease(body.annotator, body.n, settings.lease_seconds, max_held=settings.max_leased)
    return {"items": [{"id": i} for i in ids], "progress": store.progress().as_dict()}


def labeled(store: LabelStore, event: Any, duplicate: bool) -> dict:
    """The answer to a label or an undo: the event and the store's progress."""
    return {
        "seq": event.seq,
        "id": event.id,
        "label": event.label,
        "duplicate": duplicate,
        "progress": store.progress().as_dict(),
    }


@api.post("/api/label")
def label(body: LabelBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store = state.store
    return labeled(store, *store.label(body.id, body.label, body.annotator, body.request_id))


@api.post("/api/undo")
def undo(body: UndoBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store, settings = state.store, state.settings
    result = store.undo(body.annotator, body.request_id, settings.lease_seconds)
    if result is None:
        raise LabelError("nothing to undo", status=404)
    return labeled(store, *result)


@api.post("/api/page")
def page(body: PageBody, request: Request) -> dict:
    settings = _state(request).settings
    n = body.n or settings.grid_size
    if n > settings.max_leased:
        raise LabelError(f"a page holds at most {settings.max_leased} images (labeler.max_leased), asked {n}", 422)
    state = own(request, body.annotator)
    store = state.store
    ids = store.lease(body.annotator, n, settings.lease_seconds, max_held=settings.max_leased, similar=state.similar)
    guesses = store.guesses(ids)
    return {
        "items": [{"id": i, "guess": guesses.get(i, settings.grid_guess or store.labels[0])} for i in ids],
        "progress": store.progress().as_dict(),
    }


@api.post("/api/page/label")
def page_label(body: PageLabelBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store = state.store
    events, duplicate = store.label_page(body.labels, body.annotator, body.request_id)
    return {
        "page": body.request_id,
        "n": len(events),
        "duplicate": duplicate,
        "progress": store.progress().as_dict(),
    }


@api.post("/api/page/undo")
def page_undo(body: UndoBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store, settings = state.store, state.settings
    result = store.undo_page(body.annotator, body.request_id, settings.lease_seconds)
    if result is None:
        raise LabelError("nothing to undo", status=404)
    events, duplicate = result
    return {
        "items": [{"id": e.id, "guess": e.label} for e in events],
        "duplicate": duplicate,
        "progress": store.progress().as_dict(),
    }


@api.post("/api/release")
def release(body: ReleaseBody, request: Request) -> dict:
    state = own(request, body.annotator)
    store = state.store
    return {"released": store.release(body.annotator, body.ids)}


@api.get("/api/image")
def image(request: Request, item_id: Annotated[str, Query(alias="id", min_length=1, max_length=1024)]) -> Response:
    try:
        jpeg = _state(request).cache.get(item_id)
    except (OSError, ValueError) as exc:
        return JSONResponse({"detail": f"image {item_id!r} could not be read: {type(exc).__name__}"}, status_code=502)
    if jpeg is None:
        return JSONResponse({"detail": "unknown id"}, status_code=404)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@api.get("/api/labels")
def labels(request: Request) -> dict:
    return {"labels": _state(request).store.current_labels()}
