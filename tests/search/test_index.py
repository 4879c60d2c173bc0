"""SearchIndex: exact search vs brute force, ANN recall, partitions + filters, persistence, streaming build."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io.tables import embeddings_to_arrow
from pipeline.progress import read_log
from pipeline.rundir import RunDir
from pipeline.search.build import build_run_index
from pipeline.search.config import IndexConfig
from pipeline.search.filters import FilterError, filter_mask, filter_values
from pipeline.search.index import SearchIndex, merge_topk, partition_rows


def brute_force(x: np.ndarray, q: np.ndarray, k: int, metric: str, normalize: bool, mask: np.ndarray | None = None):
    """Reference top-k rows/scores with numpy (same score convention as SearchIndex)."""
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric == "ip":
        scores = q64 @ x64.T
    else:
        scores = -((q64[:, None, :] - x64[None, :, :]) ** 2).sum(-1)
    if mask is not None:
        scores[:, ~mask] = -np.inf
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n, d = 3000, 24
    centers = rng.normal(size=(12, d)) * 3
    x = (centers[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)
    meta = pa.table(
        {
            "id": [f"img-{i:05d}" for i in range(n)],
            "uri": [f"/data/img-{i:05d}.jpg" for i in range(n)],
            "product": rng.choice(["S1", "S2", "L8"], n),
            "date": pa.array(np.datetime64("2020-01-01") + rng.integers(0, 700, n).astype("timedelta64[D]")),
            "cloud": rng.uniform(0, 1, n),
        }
    )
    q = (centers[rng.integers(0, 12, 25)] + rng.normal(size=(25, d))).astype(np.float32)
    return x, meta, q


@pytest.mark.parametrize("metric,normalize", [("ip", True), ("l2", False), ("ip", False)])
def test_flat_index_matches_brute_force(data, metric, normalize):
    x, meta, q = data
    index = SearchIndex.build(x, cfg={"kind": "flat", "metric": metric, "normalize": normalize}, meta=meta)
    rows, scores = index.search_rows(q, 10)
    ref_rows, ref_scores = brute_force(x, q, 10, metric, normalize)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-3)
    assert (rows == ref_rows).mean() > 0.99  # ties in float32 may swap neighbours
    ids, _ = index.search(q, 10)
    assert ids[0, 0] == meta.column("id")[int(rows[0, 0])].as_py()


def test_ivf_with_all_cells_probed_is_exact(data):
    x, meta, q = data
    cfg = {"kind": "ivf_flat", "nlist": 16, "nprobe": 16, "metric": "l2", "normalize": False}
    rows, scores = SearchIndex.build(x, cfg=cfg, meta=meta).search_rows(q, 10)
    ref_rows, ref_scores = brute_force(x, q, 10, "l2", False)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize(
    "kind,extra",
    [
        ("ivf_flat", {"nlist": 32, "nprobe": 8}),
        ("hnsw", {"hnsw_m": 16, "ef_search": 64}),
        ("ivf_pq", {"nlist": 8, "nprobe": 8, "pq_m": 24, "pq_nbits": 4}),
    ],
)
def test_approximate_indexes_have_high_recall(data, kind, extra):
    x, meta, q = data
    index = SearchIndex.build(x, cfg={"kind": kind, **extra}, meta=meta)
    assert index.partitions[0].kind == kind
    rows, _ = index.search_rows(q, 10)
    ref_rows, _ = brute_force(x, q, 10, "ip", True)
    if kind == "ivf_pq":  # lossy codes: the true nearest neighbour must be among the 10 returned
        recall = np.mean([ref[0] in got for got, ref in zip(rows, ref_rows)])
    else:
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref_rows)])
    assert recall >= (0.75 if kind == "ivf_pq" else 0.9), recall


def test_auto_kind_depends_on_partition_size():
    cfg = IndexConfig(flat_max=1000, large_kind="ivf_flat")
    assert cfg.kind_for(1000) == "flat"
    assert cfg.kind_for(50_000) == "ivf_flat"
    assert IndexConfig(kind="ivf_pq").kind_for(500) == "flat"  # too few rows to train 256 PQ centroids
    assert IndexConfig().nlist_for(1_000_000) == 4000
    assert IndexConfig().nlist_for(390) == 10  # >= 39 training points per cell


def test_filters_return_only_matching_rows_and_match_brute_force(data):
    x, meta, q = data
    filters = {"product": ["S1", "L8"], "date": {"gte": "2020-06-01", "lt": "2021-01-01"}, "cloud": {"lte": 0.5}}
    mask = filter_mask(meta, filters)
    assert 0 < mask.sum() < len(mask)
    for partition_by in ([], ["product"], ["product", "date"]):
        index = SearchIndex.build(x, cfg={"kind": "flat", "partition_by": partition_by}, meta=meta)
        rows, scores = index.search_rows(q, 10, filters=filters)
        assert mask[rows[rows >= 0]].all()
        ref_rows, ref_scores = brute_force(x, q, 10, "ip", True, mask=mask)
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-4)


def test_partitioned_ivf_skips_partitions_and_filters_inside(data):
    x, meta, q = data
    index = SearchIndex.build(
        x, cfg={"kind": "ivf_flat", "nlist": 4, "nprobe": 4, "partition_by": ["product"]}, meta=meta
    )
    assert sorted(p.key["product"] for p in index.partitions) == ["L8", "S1", "S2"]
    assert all(p.kind == "ivf_flat" for p in index.partitions)
    ids, scores = index.search(q, 5, filters={"product": "S2", "cloud": {"gt": 0.9}})
    chosen = meta.filter(pa.compute.is_in(meta.column("id"), pa.array([i for i in ids.ravel() if i is not None])))
    assert set(chosen.column("product").to_pylist()) == {"S2"}
    assert min(chosen.column("cloud").to_pylist()) > 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_filter_with_no_match_and_more_k_than_rows(data):
    x, meta, q = data
    index = SearchIndex.build(x, cfg={"kind": "flat"}, meta=meta)
    ids, scores = index.search(q[:2], 5, filters={"product": "S1", "cloud": {"gt": 2.0}})
    assert (ids == None).all() and np.isneginf(scores).all()  # noqa: E711
    small = SearchIndex.build(x[:3], ids=["a", "b", "c"])
    ids, scores = small.search(x[:1], 5)
    ref_rows, ref_scores = brute_force(x[:3], x[:1], 3, "ip", True)  # the defaults: cosine
    assert list(ids[0, :3]) == [["a", "b", "c"][r] for r in ref_rows[0]] and ids[0, 0] == "a"
    np.testing.assert_allclose(scores[0, :3], ref_scores[0], rtol=1e-5, atol=1e-5)
    assert ids[0, 3] is None and np.isneginf(scores[0, 3:]).all()


def test_filter_errors(data):
    _, meta, _ = data
    with pytest.raises(FilterError, match="unknown filter column"):
        filter_mask(meta, {"nope": 1})
    with pytest.raises(FilterError, match="unknown filter operator"):
        filter_mask(meta, {"cloud": {"between": [0, 1]}})
    with pytest.raises(FilterError, match="does not fit column"):
        filter_mask(meta, {"date": {"gte": "not-a-date"}})
    assert filter_mask(meta, None) is None
    for unknown in (
        {"product": "S9"},
        {"product": ["S1", "S9"]},
        {"product": {"eq": "S9"}},
        {"product": {"in": ["S9"]}},
    ):
        with pytest.raises(
            FilterError, match=r"unknown value 'S9' for filter column 'product': no row has it; values: \["
        ):
            filter_mask(meta, unknown)
    assert filter_mask(meta, {"product": {"ne": "S9"}}).all()  # absent values are fine where they exclude
    assert filter_mask(meta, {"product": {"not_in": ["S9"]}}).all()


def test_filter_values_lists_distinct_values_capped(data):
    _, meta, _ = data
    got = filter_values(meta, ["product", "date", "cloud"], max_values=100)
    assert got["product"] == {"type": "string", "n_distinct": 3, "values": ["L8", "S1", "S2"], "min": "L8", "max": "S2"}
    dates = meta.column("date").to_pylist()
    assert got["date"]["n_distinct"] == len(set(dates)) > 100 and got["date"]["values"] is None
    assert (got["date"]["min"], got["date"]["max"]) == (min(dates), max(dates))
    assert got["cloud"]["values"] is None and got["cloud"]["max"] == max(meta.column("cloud").to_pylist())
    assert filter_values(meta, ["product"], max_values=2)["product"]["values"] is None


def test_filter_mask_against_python_reference(data):
    _, meta, _ = data
    rows = meta.to_pylist()
    mask = filter_mask(meta, {"product": {"ne": "S1"}, "cloud": {"gt": 0.25, "lt": 0.75}})
    ref = np.array([r["product"] != "S1" and 0.25 < r["cloud"] < 0.75 for r in rows])
    np.testing.assert_array_equal(mask, ref)
    mask = filter_mask(meta, {"product": {"not_in": ["S1", "S2"]}})
    np.testing.assert_array_equal(mask, np.array([r["product"] == "L8" for r in rows]))


def test_partition_rows_groups_equal_keys_including_nulls():
    meta = pa.table({"id": list("abcdef"), "p": ["x", None, "x", "y", None, "y"], "q": [1, 1, 1, 2, 1, 3]})
    part, keys = partition_rows(meta, ["p", "q"])
    assert list(part) == [0, 1, 0, 2, 1, 3]
    assert keys == [{"p": "x", "q": 1}, {"p": None, "q": 1}, {"p": "y", "q": 2}, {"p": "y", "q": 3}]


def test_merge_topk_matches_sorting_reference():
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 100, (4, 3)), rng.integers(100, 200, (4, 5))]
    scores = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)]
    out_rows, out_scores = merge_topk(rows, scores, 4, 4)
    all_rows, all_scores = np.hstack(rows), np.hstack(scores)
    for i in range(4):
        order = np.argsort(-all_scores[i])[:4]
        np.testing.assert_array_equal(out_rows[i], all_rows[i, order])
        np.testing.assert_allclose(out_scores[i], all_scores[i, order])


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "ivf_pq", "hnsw"])
def test_save_load_round_trip(tmp_path, data, kind):
    x, meta, q = data
    cfg = {"kind": kind, "nlist": 8, "pq_m": 8, "pq_nbits": 4, "partition_by": ["product"]}
    index = SearchIndex.build(x, cfg=cfg, meta=meta)
    index.save(str(tmp_path / "idx"))
    loaded = SearchIndex.load(str(tmp_path / "idx"))
    assert loaded.meta.equals(index.meta) and loaded.dim == index.dim
    assert [p.key for p in loaded.partitions] == [p.key for p in index.partitions]
    for filters in (None, {"product": "S1", "cloud": {"lt": 0.3}}):
        a, sa = index.search(q, 7, filters)
        b, sb = loaded.search(q, 7, filters)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb)
    row = loaded.rows_of(["img-00042"])
    stored = loaded.vectors(row)[0]
    expected = x[42] / np.linalg.norm(x[42])
    assert np.abs(stored - expected).max() < (0.5 if kind == "ivf_pq" else 1e-5)
    with pytest.raises(KeyError, match="unknown id"):
        loaded.rows_of(["missing"])


def test_load_overrides_nprobe(tmp_path, data):
    x, meta, _ = data
    SearchIndex.build(x, cfg={"kind": "ivf_flat", "nlist": 8, "nprobe": 2}, meta=meta).save(str(tmp_path / "i"))
    assert SearchIndex.load(str(tmp_path / "i")).partitions[0].index.nprobe == 2
    assert SearchIndex.load(str(tmp_path / "i"), nprobe=6).partitions[0].index.nprobe == 6


def _write_embeddings(folder, x, meta, shards=3):
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(x), shards + 1).astype(int)
    for s in range(shards):
        part = meta.slice(bounds[s], bounds[s + 1] - bounds[s]).append_column(
            "embedding", embeddings_to_arrow(x[bounds[s] : bounds[s + 1]])
        )
        pq.write_table(part, folder / f"part-{s:05d}.parquet")


def test_streaming_build_equals_in_memory_build(tmp_path, data):
    x, meta, q = data
    cfg = {"kind": "ivf_flat", "nlist": 8, "nprobe": 3, "partition_by": ["product"], "seed": 3}
    hashed = meta.append_column("pixel_hash", pa.array([f"h{i % 7}" for i in range(len(meta))]))
    _write_embeddings(tmp_path / "emb", x, hashed)  # dedup's internal hash is not a searchable column
    streamed = SearchIndex.from_embeddings(str(tmp_path / "emb"), cfg, batch_rows=257)
    in_memory = SearchIndex.build(x, cfg=cfg, meta=meta)
    assert streamed.meta.equals(meta)
    a, sa = streamed.search(q, 10)
    b, sb = in_memory.search(q, 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)


def test_build_rejects_bad_input(data):
    x, meta, _ = data
    with pytest.raises(ValueError, match="unique"):
        SearchIndex.build(x[:2], ids=["a", "a"])
    with pytest.raises(ValueError, match="partition_by"):
        SearchIndex.build(x, cfg={"partition_by": ["nope"]}, meta=meta)
    with pytest.raises(ValueError, match="unknown index config"):
        IndexConfig.from_dict({"nprob": 3})
    with pytest.raises(ValueError, match="divide"):
        SearchIndex.build(
            np.resize(x, (20000, 24)), ids=[str(i) for i in range(20000)], cfg={"kind": "ivf_pq", "pq_m": 5}
        )
    index = SearchIndex.build(x[:10], ids=[str(i) for i in range(10)])
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 24), np.nan), 2)


def test_build_run_index_marker_and_resume(tmp_path, data):
    x, meta, _ = data
    run = RunDir(str(tmp_path / "run"))
    _write_embeddings(tmp_path / "run" / "embeddings", x[:500], meta.slice(0, 500))
    run.update_run_json(config={"embed": {"backbone": "efficientnet_lite0"}})
    first = build_run_index(run, {"kind": "flat"})
    assert first["n"] == 500 and run.is_done("index")
    loaded = SearchIndex.load(run.path("index"))
    assert loaded.info["embed"] == {"backbone": "efficientnet_lite0"}
    built_at = run.marker("index")["finished_at"]
    assert build_run_index(run, {"kind": "flat"}) == first and run.marker("index")["finished_at"] == built_at  # skipped
    rebuilt = build_run_index(run, {"kind": "hnsw"})
    assert run.marker("index")["finished_at"] > built_at and rebuilt["kinds"] == ["hnsw"]
    rebuilt_at = run.marker("index")["finished_at"]
    build_run_index(run, {"kind": "hnsw"}, force=True)
    assert run.marker("index")["finished_at"] > rebuilt_at


def test_build_run_index_reports_rows_added_to_progress_log(tmp_path, data):
    x, meta, _ = data
    run = RunDir(str(tmp_path / "run"))
    _write_embeddings(tmp_path / "run" / "embeddings", x[:500], meta.slice(0, 500))
    build_run_index(run, {"kind": "flat"}, batch_rows=128)
    lines = [line.split(" ", 1)[1] for line in read_log(run)]  # drop the timestamp
    assert lines[0].startswith("index 128/500 rows (26%)")  # first batch added; total from the footers
    assert lines[-1].startswith("index 500/500 rows (100%)") and "eta 0.0s" in lines[-1]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5, 60),
    k=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    partitioned=st.booleans(),
    values=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3),
)
def test_property_filtered_results_match_and_are_sorted(n, k, seed, partitioned, values):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    meta = pa.table({"id": [str(i) for i in range(n)], "g": rng.choice(["a", "b", "c"], n)})
    index = SearchIndex.build(x, cfg={"kind": "flat", "partition_by": ["g"] if partitioned else []}, meta=meta)
    mask = np.isin(meta.column("g").to_numpy(zero_copy_only=False), values)
    if not set(values) <= set(meta.column("g").to_pylist()):
        with pytest.raises(FilterError, match="unknown value"):
            index.search_rows(x[:2], k, filters={"g": values})
        return
    rows, scores = index.search_rows(x[:2], k, filters={"g": values})
    found = rows[rows >= 0]
    assert mask[found].all()
    assert (rows >= 0).sum(axis=1).tolist() == [min(k, int(mask.sum()))] * 2
    assert np.all(np.diff(np.where(np.isfinite(scores), scores, -1e9), axis=1) <= 1e-6)
    for r in rows:
        assert len(set(r[r >= 0])) == len(r[r >= 0])
