import io
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.sources import InputConfig, detect_format, iter_images, list_units, load_image_bytes


@pytest.fixture(scope="module")
def real_rows(datasets_dir):
    table = pq.read_table(datasets_dir / "ucmerced" / "part-00000.parquet").slice(0, 12)
    return table.to_pylist()


def _collect(cfg: InputConfig) -> pa.Table:
    return pa.concat_tables(list(iter_images(cfg)))


def test_folder_tree_ids_labels_and_nested_paths(tmp_path, real_rows):
    for i, row in enumerate(real_rows):
        sub = tmp_path / row["label"] / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"img{i}.jpg").write_bytes(row["image"])
    (tmp_path / ".hidden").write_bytes(b"x")
    assert detect_format(str(tmp_path)) == "folder"
    out = _collect(InputConfig(path=str(tmp_path), files_per_unit=5))
    assert out.num_rows == len(real_rows)
    assert set(out.column("label").to_pylist()) == {r["label"] for r in real_rows}
    ids = out.column("id").to_pylist()
    assert len(set(ids)) == len(ids) and all(not i.startswith("/") for i in ids)
    first = out.slice(0, 1).to_pylist()[0]
    assert load_image_bytes(first["uri"]) == first["image"]
    # the same listing twice gives the same ids in the same order
    assert _collect(InputConfig(path=str(tmp_path), files_per_unit=5)).column("id").to_pylist() == ids


def test_parquet_with_and_without_id_column_and_carried_columns(tmp_path, real_rows):
    table = pa.Table.from_pylist(real_rows).append_column("date", pa.array(["2020-01-01"] * len(real_rows)))
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=5)
    out = _collect(InputConfig(path=str(tmp_path / "a.parquet"), rows_per_unit=3))
    assert out.column("id").to_pylist() == [r["id"] for r in real_rows]
    assert {"label", "date", "width", "height"} <= set(out.column_names)
    assert load_image_bytes(out.column("uri")[7].as_py()) == real_rows[7]["image"]

    renamed = table.drop_columns(["id"]).rename_columns(["label", "pixels", "width", "height", "date"])
    (tmp_path / "b").mkdir()
    pq.write_table(renamed, tmp_path / "b" / "part-0.parquet")
    out = _collect(InputConfig(path=str(tmp_path / "b"), image_column="pixels"))
    assert out.column("id").to_pylist()[:2] == ["part-0.parquet#0", "part-0.parquet#1"]
    with pytest.raises(KeyError, match="image column"):
        _collect(InputConfig(path=str(tmp_path / "b")))


def test_webdataset_tar_groups_members_by_key(tmp_path, real_rows):
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        for i, row in enumerate(real_rows[:4]):
            for ext, data in (("jpg", row["image"]), ("cls", row["label"].encode())):
                info = tarfile.TarInfo(f"sample{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("orphan.cls")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert detect_format(str(tmp_path)) == "tar"
    out = _collect(InputConfig(path=str(tmp_path)))
    assert out.column("id").to_pylist() == ["sample000", "sample001", "sample002", "sample003", "orphan"]
    assert out.column("cls").to_pylist()[:4] == [r["label"] for r in real_rows[:4]]
    assert out.column("_read_error").to_pylist()[-1] == "no image member in tar sample"
    assert load_image_bytes(out.column("uri")[2].as_py()) == real_rows[2]["image"]


def test_file_uri_and_glob(tmp_path, real_rows):
    pq.write_table(pa.Table.from_pylist(real_rows), tmp_path / "x.parquet")
    assert _collect(InputConfig(path=f"file://{tmp_path}/*.parquet")).num_rows == len(real_rows)


def test_missing_and_empty_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_units(InputConfig(path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        list_units(InputConfig(path=str(tmp_path / "empty")))


def test_bundled_sample_is_the_default():
    units = list_units(InputConfig())
    assert units.num_rows > 0 and os.path.isdir(units.column("root")[0].as_py())


@pytest.mark.parametrize("read_tasks", [None, 1])
def test_ray_reader_matches_the_plain_reader(ray_session, tmp_path, real_rows, read_tasks):
    """``read_images`` (Ray Data, one work unit per block, optionally capped read tasks) yields the
    plain reader's rows in the same order."""
    import ray

    pq.write_table(pa.Table.from_pylist(real_rows), tmp_path / "a.parquet", row_group_size=5)
    cfg = InputConfig(path=str(tmp_path / "a.parquet"), rows_per_unit=2, read_tasks=read_tasks)
    ctx = ray.data.DataContext.get_current()
    old, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, True
    try:
        from pipeline.io.sources import read_images

        got = pa.concat_tables(read_images(cfg).iter_batches(batch_size=None, batch_format="pyarrow"))
    finally:
        ctx.execution_options.preserve_order = old
    assert got.column("id").to_pylist() == _collect(cfg).column("id").to_pylist() == [r["id"] for r in real_rows]
