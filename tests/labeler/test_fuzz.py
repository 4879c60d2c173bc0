"""Property test: random JSON, random bytes and random form fields at every endpoint of the labeler
never get a 5xx (FastAPI TestClient, loopback Host, with and without a token)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.labeler import LabelStore
from pipeline.labeler.app import LabelerSettings, create_app

POSTS = [
    "/api/next",
    "/api/label",
    "/api/undo",
    "/api/release",
    "/api/page",
    "/api/page/label",
    "/api/page/undo",
    "/login",
]
GETS = [
    "/",
    "/login",
    "/api/config",
    "/api/progress",
    "/api/labels",
    "/api/image",
    "/static/app.js",
    "/static/x",
    "/favicon.ico",
]
QUEUED = [f"{c}/{c}{k:02d}.jpg" for c in ("fields", "roofs", "water") for k in range(20)]  # conftest's ids
FIELDS = ["annotator", "n", "id", "label", "labels", "request_id", "ids", "token", "batch"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=6),
    max_leaves=30,
)
field_values = st.one_of(json_values, st.sampled_from(["alice", "bob", "positive", "maybe", "request-0001", "[" * 60]))
bodies = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=5)
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture(scope="module", params=[None, "fuzz-token-123456"], ids=["open", "token"])
def client(request, image_files, tmp_path_factory):
    ids, uris = image_files
    store = LabelStore(tmp_path_factory.mktemp("fuzz") / "labels.sqlite")
    store.register(ids, uris)
    store.enqueue(ids)
    app = create_app(store, dataclasses.replace(LabelerSettings(), token=request.param))
    headers = {"authorization": f"Bearer {request.param}"} if request.param else {}
    with TestClient(app, base_url="http://127.0.0.1", headers=headers, raise_server_exceptions=False) as c:
        yield c


def _ok(r) -> None:
    assert r.status_code < 500 or (r.status_code == 502 and "could not be read" in r.text), (
        r.status_code,
        r.text[:500],
    )


@FUZZ
@given(path=st.sampled_from(POSTS), body=st.one_of(bodies, json_values))
def test_json_bodies(client, path, body):
    _ok(client.post(path, content=json.dumps(body), headers={"content-type": "application/json"}))


@FUZZ
@given(
    path=st.sampled_from(POSTS),
    data=st.binary(max_size=2000),
    ctype=st.sampled_from(
        ["application/json", "multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", ""]
    ),
)
def test_random_bytes(client, path, data, ctype):
    _ok(client.post(path, content=data, headers={"content-type": ctype}))


@FUZZ
@given(path=st.sampled_from(POSTS), fields=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=40), max_size=5))
def test_form_fields(client, path, fields):
    _ok(client.post(path, data=fields))


@FUZZ
@given(
    path=st.sampled_from(GETS),
    params=st.dictionaries(st.sampled_from(["id", "batch", "token"]), st.text(max_size=40), max_size=3),
    session=st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300)),
)
def test_get_endpoints(client, path, params, session):
    _ok(client.get(path, params=params, headers={} if session is None else {"x-strata-session": session}))


@FUZZ
@given(
    labels=st.dictionaries(
        st.one_of(st.text(max_size=40), st.sampled_from(QUEUED)),
        st.sampled_from(["positive", "negative", "maybe", ""]),
        max_size=8,
    ),
    request_id=st.sampled_from(["page-000001", "page-000002", "x"]),
)
def test_page_label_bodies(client, labels, request_id):
    """Well-formed page requests with arbitrary ids and labels (the store's checks, not the schema's)."""
    body = {"annotator": "fuzzer", "labels": labels, "request_id": request_id}
    _ok(client.post("/api/page/label", json=body, headers={"x-strata-session": "fuzz-session"}))
    _ok(client.post("/api/page/undo", json={"annotator": "fuzzer"}, headers={"x-strata-session": "fuzz-session"}))
