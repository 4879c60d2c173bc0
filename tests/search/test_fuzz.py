"""Property test: random JSON, random bytes and random form fields at every endpoint of the search
server never get a 5xx (FastAPI TestClient, loopback Host)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.search.app import ServeSettings, create_app
from pipeline.search.service import image_to_bytes

FIELDS = ["id", "vector", "image_base64", "k", "filters", "tiles", "image", "colour"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["forest/im007.png", "2x2", "16x16,16x16", "1x1,2x2,3x3", "0x0", "[" * 40, "{}"]),
    st.lists(st.floats(-2, 2, allow_nan=False), min_size=48, max_size=48),
)
search_bodies = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=5)
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def client(image_service):
    app = create_app(image_service, ServeSettings.defaults(request_timeout_s=30))
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        c.png = image_to_bytes(image_service.test_images[3])
        yield c


def _ok(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])


@FUZZ
@given(body=st.one_of(search_bodies, json_values))
def test_json_bodies(client, body):
    _ok(client.post("/search", content=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"}))


@FUZZ
@given(
    data=st.binary(max_size=2000),
    ctype=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "image/png",
            "",
        ]
    ),
)
def test_random_bytes(client, data, ctype):
    _ok(client.post("/search", content=data, headers={"content-type": ctype}))


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(FIELDS), st.one_of(field_values.map(json.dumps), st.text(max_size=40)), max_size=5
    ),
    image=st.one_of(st.none(), st.binary(max_size=300), st.just(b"png")),
)
def test_form_fields(client, fields, image):
    files = None if image is None else {"image": ("q.png", client.png if image == b"png" else image, "image/png")}
    _ok(client.post("/search", data=fields, files=files))


@FUZZ
@given(
    path=st.text(max_size=40),
    size=st.one_of(st.none(), st.integers(-5, 5000), st.text(max_size=5)),
    extra=st.sampled_from(["/healthz", "/", "/docs", "/openapi.json", "/search", "/filters", "/items"]),
)
def test_get_endpoints(client, path, size, extra):
    params = {} if size is None else {"size": size}
    _ok(client.get("/images/" + quote(path, safe="/"), params=params))
    _ok(client.get(extra, params=params))


@FUZZ
@given(
    offset=st.one_of(st.none(), st.integers(-5, 10**20), st.text(max_size=5)),
    limit=st.one_of(st.none(), st.integers(-5, 500), st.text(max_size=5)),
    filters=st.one_of(
        st.none(),
        st.text(max_size=40),
        json_values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.dictionaries(st.sampled_from(["label", "date", "uri", "id", "nope"]), json_values, max_size=3).map(
            json.dumps
        ),
    ),
)
def test_items_pages(client, offset, limit, filters):
    params = {k: v for k, v in (("offset", offset), ("limit", limit), ("filters", filters)) if v is not None}
    _ok(client.get("/items", params=params))
