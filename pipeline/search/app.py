"""HTTP API and search page (FastAPI) over a :class:`~pipeline.search.service.SearchService`.

- ``POST /search``: JSON ``{"id" | "vector" | "image_base64", "k", "filters", "tiles"}`` or a
  multipart form (``image`` file, same other fields; ``vector``/``filters`` as JSON text);
- ``GET /images/{id}``: JPEG thumbnail of an indexed image, looked up by id only (never by path);
- ``GET /healthz``: index summary; ``GET /``: the search page; ``/docs``: OpenAPI UI.

Bad requests get a 4xx with ``{"detail": "<message>"}``.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from pipeline.search.service import QueryError, SearchService, UnknownIdError

log = logging.getLogger(__name__)


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


def _parse_json_field(name: str, text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(400, f"form field {name!r} is not valid JSON: {exc.msg}") from None


def create_app(service: SearchService, max_upload_bytes: int = 20 * 2**20, title: str = "Strata search") -> FastAPI:
    """The FastAPI application answering queries with ``service``."""
    app = FastAPI(
        title=title,
        description="Nearest-neighbour search over a Strata run's embeddings (query by image, id or vector).",
        version="1",
    )
    page = resources.files("pipeline.search").joinpath("static/index.html").read_text(encoding="utf-8")

    async def _from_form(request: Request) -> dict[str, Any]:
        form = await request.form()
        upload = form.get("image")
        image = None
        if isinstance(upload, UploadFile):
            image = await upload.read(max_upload_bytes + 1)
            if len(image) > max_upload_bytes:
                raise HTTPException(413, f"image larger than {max_upload_bytes} bytes")
            if not image:
                raise HTTPException(400, "the uploaded image is empty")
        elif upload is not None:
            raise HTTPException(400, "form field 'image' must be a file upload")
        k = form.get("k") or 10
        return {
            "image": image,
            "id": form.get("id") or None,
            "vector": _parse_json_field("vector", form.get("vector")),
            "k": k,
            "filters": _parse_json_field("filters", form.get("filters")),
            "tiles": form.get("tiles") or None,
        }

    async def _from_json(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(400, "request body is not valid JSON") from None
        try:
            req = SearchRequest.model_validate(body)
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise HTTPException(422, f"invalid search request: {errors}") from None
        image = None
        if req.image_base64 is not None:
            try:
                image = base64.b64decode(req.image_base64, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPException(400, "image_base64 is not valid base64") from None
            if len(image) > max_upload_bytes:
                raise HTTPException(413, f"image larger than {max_upload_bytes} bytes")
        return {"image": image, "id": req.id, "vector": req.vector, "k": req.k, "filters": req.filters, "tiles": req.tiles}

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
        responses={400: {"description": "malformed query"}, 404: {"description": "unknown id"}},
    )
    async def search(request: Request) -> dict:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
            args = await _from_form(request)
        elif ctype.startswith("application/json"):
            args = await _from_json(request)
        else:
            raise HTTPException(415, "send application/json or multipart/form-data")
        try:
            return await run_in_threadpool(lambda: service.search(**args))
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get(
        "/images/{image_id:path}",
        summary="JPEG thumbnail of an indexed image, by id",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown id or image unavailable"}},
    )
    async def image(image_id: str, size: int | None = Query(None, ge=16, le=1024)) -> Response:
        try:
            data = await run_in_threadpool(service.thumbnail, image_id, size)
        except UnknownIdError as exc:
            raise HTTPException(404, str(exc)) from None
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except (LookupError, OSError, ValueError) as exc:
            log.warning("thumbnail of %r unavailable: %s", image_id, exc)
            raise HTTPException(404, f"image for id {image_id!r} is unavailable") from None
        return Response(content=data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz", summary="Liveness and index summary")
    async def healthz() -> dict:
        return {"status": "ok", **service.describe()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    return app


__all__ = ["create_app", "SearchRequest", "SearchResponse"]
