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


def _folder_rows(root) -> dict[str, dict]:
    out = _collect(InputConfig(path=str(root), files_per_unit=2))
    return {r["id"]: r for r in out.to_pylist()}


def test_awkward_file_names_are_each_one_row_kept_or_rejected(tmp_path, real_rows):
    """A non-UTF-8 name, a name with a newline and a name like an option are listed (bytes-safe),
    never split into phantom rows, and each ends as one kept row or one row with a reason."""
    root = tmp_path / "in"
    (root / "forest").mkdir(parents=True)
    jpeg = real_rows[0]["image"]
    (root / "forest" / "ok.jpg").write_bytes(jpeg)
    (root / "forest" / "-rf #1 ünïcode.jpg").write_bytes(jpeg)
    os.close(os.open(os.path.join(os.fsencode(root / "forest"), b"caf\xe9.jpg"), os.O_CREAT | os.O_WRONLY))
    with open(os.path.join(os.fsencode(root), b"bad\xff.jpg"), "wb") as fh:
        fh.write(jpeg)
    (root / "x\nsecret.jpg").write_bytes(jpeg)
    # the old reader split listings on newlines and read `secret.jpg` relative to the working dir
    (tmp_path / "secret.jpg").write_bytes(b"must never be read")
    units = list_units(InputConfig(path=str(root), files_per_unit=2))
    assert sum(len(n) for n in units.column("names").to_pylist()) == 5
    rows = _folder_rows(root)
    assert len(rows) == 5
    assert rows["forest/ok.jpg"]["_read_error"] is None and rows["forest/ok.jpg"]["label"] == "forest"
    assert rows["forest/-rf #1 ünïcode.jpg"]["image"] == jpeg
    invalid = {i: r for i, r in rows.items() if (r["_read_error"] or "").startswith("invalid-name")}
    assert set(invalid) == {"forest/caf\\xe9.jpg", "bad\\xff.jpg", "x\\x0asecret.jpg"}
    assert all(r["image"] is None for r in invalid.values())
    assert all(b"must never" not in (r["image"] or b"") for r in rows.values())
    pa.Table.from_pylist(list(rows.values()))  # every id and uri is valid UTF-8 (writable to Parquet)


def test_symlinks_out_of_the_input_are_refused_unless_allowed(tmp_path, real_rows):
    jpeg = real_rows[0]["image"]
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(jpeg)
    (outside / "deep" / "more.jpg").write_bytes(jpeg)
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "real.jpg").write_bytes(jpeg)
    (root / "a" / "inner-link.jpg").symlink_to(root / "a" / "real.jpg")
    (root / "a" / "escape.jpg").symlink_to(outside / "secret.jpg")
    (root / "a" / "dir-out").symlink_to(outside / "deep", target_is_directory=True)
    (root / "b").symlink_to(root / "a", target_is_directory=True)  # inside: its files are listed via a/

    rows = _folder_rows(root)
    assert set(rows) == {"a/real.jpg", "a/inner-link.jpg", "a/escape.jpg", "a/dir-out"}
    assert rows["a/inner-link.jpg"]["image"] == jpeg and rows["a/real.jpg"]["_read_error"] is None
    for refused in ("a/escape.jpg", "a/dir-out"):
        assert rows[refused]["image"] is None and rows[refused]["_read_error"].startswith("outside-input")

    followed = _collect(InputConfig(path=str(root), follow_symlinks=True)).to_pylist()
    by_id = {r["id"]: r for r in followed}
    assert by_id["a/escape.jpg"]["image"] == jpeg and by_id["a/dir-out/more.jpg"]["image"] == jpeg
    assert len(followed) == len(by_id)  # the b -> a loop back into the tree is walked once


def test_embed_accounts_for_every_refused_name(tmp_path, real_rows):
    """The embed stage turns refused names into reject reasons: read == kept + rejected."""
    from pipeline.embed.stage import REJECT_REASON, EmbedStage

    root = tmp_path / "in"
    root.mkdir()
    (root / "ok.jpg").write_bytes(real_rows[0]["image"])
    with open(os.path.join(os.fsencode(root), b"bad\xff.jpg"), "wb") as fh:
        fh.write(real_rows[1]["image"])
    (root / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    (tmp_path / "secret.jpg").write_bytes(real_rows[2]["image"])
    stage = EmbedStage({"backbone": "resnet18", "image_size": 32, "device": "cpu"})
    stage.setup()
    out = stage.process(_collect(InputConfig(path=str(root))))
    reasons = sorted((r or "kept").split(":")[0] for r in out.column(REJECT_REASON).to_pylist())
    assert reasons == ["invalid-name", "kept", "outside-input"]


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_embed_step_counts_every_file_once(request, engine, tmp_path, real_rows):
    """``run_embed`` on a folder with awkward names: ``read == kept + rejected``, reasons in rejects.parquet
    (in process and through Ray Data)."""
    if engine == "ray":
        request.getfixturevalue("ray_session")
    from pipeline.embed.stage import run_embed
    from pipeline.rundir import RunDir

    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        (root / "a" / f"ok{i}.jpg").write_bytes(real_rows[i]["image"])
    with open(os.path.join(os.fsencode(root), b"bad\xff.jpg"), "wb") as fh:
        fh.write(real_rows[3]["image"])
    (root / "x\nsecret.jpg").write_bytes(real_rows[4]["image"])
    (tmp_path / "outside.jpg").write_bytes(real_rows[5]["image"])
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    run = RunDir(str(tmp_path / "run"))
    counts = run_embed(
        run,
        {"path": str(root)},
        {"backbone": "resnet18", "image_size": 32, "pool_size": 1, "batch_size": 8, "engine": engine},
    )
    assert counts["engine"] == engine
    assert (counts["read"], counts["kept"], counts["rejected"]) == (6, 3, 3)
    assert counts["reject_reasons"] == {"invalid-name": 2, "outside-input": 1}
    rejects = pq.read_table(run.path("rejects.parquet")).to_pylist()
    assert {r["id"] for r in rejects} == {"bad\\xff.jpg", "x\\x0asecret.jpg", "link.jpg"}
