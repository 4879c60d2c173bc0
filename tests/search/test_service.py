"""Tile grids, bucket voting and the query service (image / id / vector, tiles, thumbnails)."""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from pipeline.search.service import QueryError, UnknownIdError, image_to_bytes
from pipeline.search.tiles import bucket_vote, cut_tiles, parse_tiles, vote_weights


def test_parse_tiles():
    assert parse_tiles(None) == [(1, 1)]
    assert parse_tiles("2x2") == [(2, 2)]
    assert parse_tiles(" 3X2 ") == [(3, 2)]
    assert parse_tiles("1x1,2x2") == [(1, 1), (2, 2)]
    assert parse_tiles(3) == [(3, 3)]
    for bad in ("2", "0x2", "axb", "2x2,", "20x20"):
        with pytest.raises(ValueError):
            parse_tiles(bad)


def test_cut_tiles_reassemble_the_image():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # odd sizes: uneven tiles
    tiles = cut_tiles(Image.fromarray(arr), [(2, 3)])
    assert len(tiles) == 6
    rows = [np.hstack([np.asarray(t) for t in tiles[r * 3 : (r + 1) * 3]]) for r in range(2)]
    np.testing.assert_array_equal(np.vstack(rows), arr)
    assert len(cut_tiles(Image.fromarray(arr), [(1, 1), (2, 2)])) == 5
    with pytest.raises(ValueError, match="too small"):
        cut_tiles(Image.new("RGB", (2, 2)), [(3, 3)])


def test_bucket_vote_matches_dictionary_reference():
    rng = np.random.default_rng(1)
    rows = rng.integers(-1, 15, (4, 6))
    weights = rng.uniform(0, 1, (4, 6))
    got_rows, got_votes = bucket_vote(rows, weights, k=5)
    ref = defaultdict(float)
    for r, w in zip(rows.ravel(), weights.ravel()):
        if r >= 0:
            ref[int(r)] += w
    expected = sorted(ref.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert got_rows.tolist() == [r for r, _ in expected]
    np.testing.assert_allclose(got_votes, [v for _, v in expected])


def test_vote_weights():
    np.testing.assert_allclose(vote_weights(np.array([0.5, -np.inf]), "ip"), [0.5, 0.0])
    np.testing.assert_allclose(vote_weights(np.array([-4.0, 0.0, -np.inf]), "l2"), [1 / 3, 1.0, 0.0])


def test_query_by_image_id_and_vector_agree(image_service):
    service = image_service
    target = service.test_images[7]
    by_image = service.search(image=image_to_bytes(target), k=5)
    by_id = service.search(id=by_image["results"][0]["id"], k=5)
    vector = service.index.vectors(service.index.rows_of([by_image["results"][0]["id"]]))[0]
    by_vector = service.search(vector=vector.tolist(), k=5)
    assert by_image["results"][0]["id"] == "forest/im007.png"
    assert by_image["results"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert (
        [r["id"] for r in by_id["results"]]
        == [r["id"] for r in by_image["results"]]
        == [r["id"] for r in by_vector["results"]]
    )
    assert {"rank", "id", "score", "uri", "label", "date"} <= set(by_id["results"][0])


def test_filters_through_the_service(image_service):
    out = image_service.search(id="forest/im007.png", k=8, filters={"label": "river", "date": {"gte": "2021-06-01"}})
    assert len(out["results"]) == 8
    assert all(r["label"] == "river" and r["date"] >= "2021-06-01" for r in out["results"])


def test_tile_search_finds_the_four_images_of_a_mosaic(image_service):
    service = image_service
    parts = [3, 17, 30, 44]
    mosaic = Image.new("RGB", (128, 128))
    for slot, i in enumerate(parts):
        mosaic.paste(service.test_images[i], ((slot % 2) * 64, (slot // 2) * 64))
    whole = service.search(image=mosaic, k=4)
    tiled = service.search(image=image_to_bytes(mosaic), k=4, tiles="2x2")
    expected = {service.index.ids[i] for i in parts}
    assert {r["id"] for r in tiled["results"]} == expected
    assert {r["id"] for r in whole["results"]} != expected  # a whole-image query cannot see the parts
    assert tiled["query"]["tiles"] == "2x2"
    by_id_tiles = service.search(id=service.index.ids[3], k=3, tiles="1x1,2x2")
    assert by_id_tiles["results"][0]["id"] == service.index.ids[3]


def test_tile_scores_are_the_mean_tile_similarity(image_service):
    """A tiled hit's score is the mean over tiles of each tile's cosine (0 where a tile missed it),
    so it stays on the cosine scale: the old sum over 4 tiles reached ~4."""
    service = image_service
    mosaic = Image.new("RGB", (128, 128))
    for slot, i in enumerate([3, 3, 3, 3]):  # four copies: every tile finds image 3 at cosine ~1
        mosaic.paste(service.test_images[i], ((slot % 2) * 64, (slot // 2) * 64))
    out = service.search(image=mosaic, k=6, tiles="2x2")
    assert out["results"][0]["id"] == service.index.ids[3]
    assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    tiles = cut_tiles(mosaic, [(2, 2)])
    rows, scores = service.index.search_rows(service.embed_images(tiles), 6)
    reference = defaultdict(float)
    for r, sc in zip(rows.ravel(), scores.ravel()):
        reference[service.index.ids[r]] += sc / 4
    for hit in out["results"]:
        assert hit["score"] == pytest.approx(reference[hit["id"]], abs=1e-5) and -1 <= hit["score"] <= 1 + 1e-6
    assert "mean over the query's tiles" in service.describe()["score"] and "cosine" in service.describe()["score"]


def test_items_pages_through_the_index_with_filters(image_service):
    service = image_service
    first = service.items(0, 25)
    assert first["total"] == 60 and [r["id"] for r in first["items"]] == list(service.index.ids[:25])
    assert set(first["items"][0]) == {"id", "label", "date"}  # the server-side uri is never listed
    last = service.items(50, 25)
    assert [r["id"] for r in last["items"]] == list(service.index.ids[50:])
    rivers = service.items(0, 100, {"label": "river"})
    assert rivers["total"] == 20 and {r["label"] for r in rivers["items"]} == {"river"}
    with pytest.raises(QueryError, match="unknown value 'lake' for filter column 'label'"):
        service.items(0, 10, {"label": "lake"})
    with pytest.raises(QueryError, match="offset"):
        service.items(-1, 10)
    values = service.filter_values(100)
    assert set(values) == {"label", "date"} and values["label"]["values"] == ["field", "forest", "river"]
    assert len(values["date"]["values"]) == 12


def test_bad_queries(image_service):
    service = image_service
    with pytest.raises(QueryError, match="exactly one"):
        service.search(k=3)
    with pytest.raises(QueryError, match="exactly one"):
        service.search(id="x", vector=[0.0] * 48)
    with pytest.raises(QueryError, match="k must be"):
        service.search(id="forest/im007.png", k=0)
    with pytest.raises(QueryError, match="48 numbers"):
        service.search(vector=[1.0, 2.0])
    with pytest.raises(QueryError, match="not an image"):
        service.search(image=b"definitely not an image")
    with pytest.raises(QueryError, match="unknown filter column"):
        service.search(id="forest/im007.png", filters={"nope": 1})
    with pytest.raises(QueryError, match="unknown value 'lake' for filter column 'label': no row has it"):
        service.search(id="forest/im007.png", filters={"label": "lake"})
    with pytest.raises(QueryError, match="tiles"):
        service.search(vector=[0.1] * 48, tiles="2x2")
    with pytest.raises(UnknownIdError):
        service.search(id="missing.png")


def test_thumbnail_by_id(image_service):
    data = image_service.thumbnail("forest/im007.png", 32)
    thumb = Image.open(io.BytesIO(data))
    assert thumb.format == "JPEG" and max(thumb.size) == 32
    with pytest.raises(UnknownIdError):
        image_service.thumbnail("/etc/passwd")


def test_settings_left_out_are_the_conf_values(image_service):
    """No second source: a service built without ``max_k`` / ``thumbnail_side`` and a query without
    ``k`` take ``conf/serve.yaml`` and ``conf/search.yaml``'s values."""
    from pipeline.config import load_group

    serve = load_group("serve")
    assert (image_service.max_k, image_service.thumbnail_side) == (serve["max_k"], serve["thumbnail_side"])
    out = image_service.search(id=image_service.index.ids[0])
    assert out["k"] == len(out["results"]) == load_group("search")["query"]["k"]
