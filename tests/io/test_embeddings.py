"""input.format=embeddings: ids of any integer/string type, list kinds and float widths, rejects, clear errors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import load_group
from pipeline.embed.imported import import_embeddings
from pipeline.io.embeddings import check_embeddings_input, is_embeddings_input, iter_embeddings
from pipeline.io.sources import InputConfig
from pipeline.rundir import RunDir


def _cfg(path, **kw) -> dict:
    return {**load_group("input/default"), "path": str(path), "format": "embeddings", **kw}


def _read(cfg: dict) -> tuple[pa.Table, pa.Table]:
    c = InputConfig.from_dict(cfg)
    parts = list(iter_embeddings(c, check_embeddings_input(c)))
    return pa.concat_tables([p[0] for p in parts]), pa.concat_tables([p[1] for p in parts])


@pytest.mark.parametrize("id_type", [pa.int8(), pa.uint32(), pa.int64(), pa.string(), pa.large_string()])
@pytest.mark.parametrize("float_type", [pa.float16(), pa.float32(), pa.float64()])
def test_ids_of_any_type_become_strings_and_vectors_float32(tmp_path, id_type, float_type):
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 8
    ids = pa.array([3, 1, 2, 0]).cast(id_type) if not pa.types.is_integer(id_type) else pa.array([3, 1, 2, 0], id_type)
    vec = pa.array([list(r) for r in x], pa.list_(float_type))
    pq.write_table(pa.table({"key": ids, "vec": vec, "lang": list("abcd")}), tmp_path / "e.parquet")
    kept, rejects = _read(_cfg(tmp_path / "e.parquet", id_column="key", embedding_column="vec"))
    assert kept.column("id").to_pylist() == ["3", "1", "2", "0"] and rejects.num_rows == 0
    assert kept.schema.field("embedding").type == pa.list_(pa.float32(), 3)
    np.testing.assert_array_equal(np.array(kept.column("embedding").to_pylist(), np.float32), x.astype(np.float32))
    assert kept.column("key").type == id_type and kept.column("lang").to_pylist() == list("abcd")


def test_fixed_size_lists_nan_and_missing_rows_go_to_rejects(tmp_path):
    rows = [[1.0, 2.0], None, [float("nan"), 1.0], [0.5, float("inf")], [3.0, 4.0]]
    t = pa.table({"id": pa.array([10, 11, None, 13, 14]), "embedding": pa.array(rows, pa.list_(pa.float64(), 2))})
    t = t.append_column("uri", pa.array([f"s3://b/{i}.txt" for i in range(5)]))
    pq.write_table(t, tmp_path / "e.parquet")
    run = RunDir(str(tmp_path / "run"))
    counts = import_embeddings(run, _cfg(tmp_path / "e.parquet"))
    assert (counts["read"], counts["kept"], counts["rejected"]) == (5, 2, 3)
    assert counts["id_type"] == "int64" and counts["dim"] == 2
    rejects = pq.read_table(tmp_path / "run" / "rejects.parquet").to_pylist()
    assert [(r["id"], r["uri"], r["reason"].split(":")[0]) for r in rejects] == [
        ("11", "s3://b/1.txt", "missing-embedding"),
        ("e.parquet#2", "s3://b/2.txt", "missing-id"),
        ("13", "s3://b/3.txt", "nan-embedding"),
    ]
    kept = pq.read_table(tmp_path / "run" / "embeddings")
    assert kept.column("id").to_pylist() == ["10", "14"] and kept.column("uri").to_pylist() == [
        "s3://b/0.txt",
        "s3://b/4.txt",
    ]


def test_npy_with_an_id_file_and_without(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float16)
    np.save(tmp_path / "e.npy", x)
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\ne\n")
    assert is_embeddings_input({"path": str(tmp_path / "e.npy"), "format": "auto"})
    kept, _ = _read(_cfg(tmp_path / "e.npy", format="auto", id_path=str(tmp_path / "ids.txt")))
    assert kept.column("id").to_pylist() == list("abcde")
    np.testing.assert_array_equal(np.array(kept.column("embedding").to_pylist(), np.float32), x.astype(np.float32))
    kept, _ = _read(_cfg(tmp_path / "e.npy"))
    assert kept.column("id").to_pylist() == ["0", "1", "2", "3", "4"]
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 ids for 5 vectors"):
        _read(_cfg(tmp_path / "e.npy", id_path=str(tmp_path / "short.txt")))


@pytest.mark.parametrize(
    ("table", "overrides", "message"),
    [
        (
            {"doc_id": [1], "vector": [[1.0]]},
            {"id_column": "doc"},
            "input.id_column=doc: no such id column.*did you mean input.id_column=doc_id",
        ),
        (
            {"doc_id": [1], "vector": [[1.0]]},
            {"id_column": "doc_id", "embedding_column": "vectors"},
            "did you mean input.embedding_column=vector",
        ),
        (
            {"id": [1, 2], "embedding": [[1.0, 2.0], [1.0]]},
            {},
            r"vectors of different lengths \(2 and 1, first at id '2'\)",
        ),
        ({"id": [1, 1], "embedding": [[1.0], [2.0]]}, {}, "id '1' appears 2 times"),
        ({"id": [1], "embedding": ["x"]}, {}, "expected a list of float16/32/64, got string"),
        ({"id": [1.5], "embedding": [[1.0]]}, {}, "ids must be integers or strings, got double"),
        ({"doc_id": [1], "id": ["a"], "embedding": [[1.0]]}, {"id_column": "doc_id"}, "has a column 'id' besides"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, table, overrides, message):
    pq.write_table(pa.table(table), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=message) as info:
        _read(_cfg(tmp_path / "e.parquet", **overrides))
    assert "\n" not in str(info.value)


def test_the_import_step_skips_an_unchanged_input_and_recomputes_a_changed_one(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 1.0]]}), path)
    run = RunDir(str(tmp_path / "run"))
    import_embeddings(run, _cfg(path))
    first = run.marker("embed")
    import_embeddings(run, _cfg(path))
    assert run.marker("embed")["finished_at"] == first["finished_at"]
    pq.write_table(pa.table({"id": ["a", "b", "c"], "embedding": [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]}), path)
    assert import_embeddings(run, _cfg(path))["kept"] == 3
    assert run.marker("embed")["fingerprint"] != first["fingerprint"]
