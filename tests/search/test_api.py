"""HTTP API against a real uvicorn server on 127.0.0.1 (upload, id, vector, filters, thumbnails, bad input)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from pipeline.search.service import image_to_bytes


@pytest.fixture(scope="module")
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=60) as c:
        yield c


def test_healthz_and_openapi(client, image_service):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["n"] == 60 and health["dim"] == 48
    assert health["partition_by"] == ["label"] and len(health["partitions"]) == 3
    assert health["image_queries"] is True
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    assert "/images/{image_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_upload_search(client, image_service):
    png = image_to_bytes(image_service.test_images[12])
    r = client.post("/search", files={"image": ("q.png", png, "image/png")}, data={"k": "4"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 4 and body["results"][0]["id"] == "field/im012.png"
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_upload_with_filters_and_tiles(client, image_service):
    png = image_to_bytes(image_service.test_images[12])
    r = client.post(
        "/search",
        files={"image": ("q.png", png, "image/png")},
        data={"k": "5", "filters": json.dumps({"label": ["river"]}), "tiles": "2x2"},
    )
    assert r.status_code == 200, r.text
    assert {h["label"] for h in r.json()["results"]} == {"river"}
    assert r.json()["query"]["tiles"] == "2x2"


def test_json_search_by_id_vector_and_base64(client, image_service):
    by_id = client.post("/search", json={"id": "forest/im007.png", "k": 6, "filters": {"date": {"lt": "2021-09-01"}}})
    assert by_id.status_code == 200, by_id.text
    hits = by_id.json()["results"]
    assert hits[0]["id"] == "forest/im007.png" and all(h["date"] < "2021-09-01" for h in hits)
    vector = image_service.index.vectors(image_service.index.rows_of(["forest/im007.png"]))[0].tolist()
    by_vector = client.post("/search", json={"vector": vector, "k": 6, "filters": {"date": {"lt": "2021-09-01"}}})
    assert [h["id"] for h in by_vector.json()["results"]] == [h["id"] for h in hits]
    b64 = base64.b64encode(image_to_bytes(image_service.test_images[7])).decode()
    by_image = client.post("/search", json={"image_base64": b64, "k": 1})
    assert by_image.json()["results"][0]["id"] == "forest/im007.png"


@pytest.mark.parametrize(
    "kwargs,status,message",
    [
        ({"json": {"k": 3}}, 400, "exactly one of image, id or vector"),
        ({"json": {"id": "forest/im007.png", "vector": [0.0] * 48}}, 400, "exactly one"),
        ({"json": {"id": "forest/im007.png", "k": 0}}, 422, "k"),
        ({"json": {"id": "forest/im007.png", "k": 5000}}, 400, "k must be between"),
        ({"json": {"id": "forest/im007.png", "colour": "red"}}, 422, "colour"),
        ({"json": {"id": "nope.png"}}, 404, "unknown id"),
        ({"json": {"vector": [1.0, 2.0]}}, 400, "48 numbers"),
        ({"json": {"id": "forest/im007.png", "filters": {"nope": 1}}}, 400, "unknown filter column"),
        ({"json": {"id": "forest/im007.png", "filters": {"date": {"gte": 5}}}}, 400, "does not fit"),
        ({"json": {"id": "forest/im007.png", "tiles": "lots"}}, 400, "NxM"),
        ({"json": {"image_base64": "***"}}, 400, "base64"),
        ({"files": {"image": ("x.jpg", b"not an image at all", "image/jpeg")}}, 400, "not an image"),
        ({"files": {"image": ("x.jpg", b"", "image/jpeg")}, "data": {"k": "3"}}, 400, "empty"),
        (
            {"files": {"image": ("x.png", b"\x89PNG\r\n", "image/png")}, "data": {"filters": "{bad json"}},
            400,
            "not valid JSON",
        ),
        ({"content": b"id=1", "headers": {"content-type": "text/plain"}}, 415, "application/json"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ],
)
def test_bad_requests_get_clear_4xx(client, kwargs, status, message):
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"])


def test_thumbnails_by_id_only(client):
    r = client.get("/images/forest/im007.png", params={"size": 40})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 40
    assert client.get("/images/forest/missing.png").status_code == 404
    assert client.get("/images/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/images/forest/im007.png", params={"size": 5}).status_code == 422


def test_items_endpoint_pages_are_bounded_and_filterable(client, image_service):
    page = client.get("/items", params={"offset": 10, "limit": 5}).json()
    assert page["total"] == 60 and [r["id"] for r in page["items"]] == list(image_service.index.ids[10:15])
    assert all("uri" not in r for r in page["items"])
    forest = client.get("/items", params={"limit": 200, "filters": json.dumps({"label": ["forest"]})}).json()
    assert forest["total"] == 20 and {r["label"] for r in forest["items"]} == {"forest"}
    too_many = client.get("/items", params={"limit": 201})
    assert too_many.status_code == 400 and "limits.max_page" in too_many.json()["detail"]
    bad = client.get("/items", params={"filters": json.dumps({"label": "lake"})})
    assert bad.status_code == 400 and "unknown value 'lake'" in bad.json()["detail"]
    assert client.get("/items", params={"filters": "[1]"}).status_code == 400
    assert client.get("/items", params={"offset": -1}).status_code == 422


def test_filters_endpoint_lists_values_of_carried_columns(client):
    body = client.get("/filters").json()
    assert body["max_values"] == 100
    assert body["columns"]["label"]["values"] == ["field", "forest", "river"]
    assert body["columns"]["date"]["n_distinct"] == 12 and "uri" not in body["columns"]


def test_unknown_filter_value_is_a_clear_400(client):
    r = client.post("/search", json={"id": "forest/im007.png", "filters": {"label": "lake"}})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("unknown value 'lake' for filter column 'label': no row has it; values: [")


def test_search_page_is_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "Strata similarity search" in r.text and 'id="file"' in r.text
