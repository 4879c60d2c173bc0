"""`strata export` on a small real curate output: ImageFolder (torchvision), WebDataset (tarfile), JSONL (json).

The curate run is real but needs no Ray: 48 UC Merced images with precomputed colour-layout
embeddings and their file uris (``input.format=embeddings``; dedup, k-means in process, sampling).
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import tarfile
from collections import Counter, defaultdict
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pipeline.config import load_group
from pipeline.curate import run_curate
from pipeline.export.rows import ExportConfig, sample_key
from pipeline.export.run import run_export
from pipeline.rundir import RunDir

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
CLASSES = {"beach": 16, "forest": 12, "harbor": 8, "runway": 6, "tenniscourt": 6}


@pytest.fixture(scope="module")
def curated(tmp_path_factory, datasets_dir) -> Path:
    """A finished curate run over real image files (manifest with uri, label, level_1, multiplicity)."""
    root = tmp_path_factory.mktemp("export")
    table = pq.read_table(datasets_dir / "ucmerced", columns=["id", "label", "image"])
    seen: Counter[str] = Counter()
    rows = []
    for r in table.to_pylist():
        if seen[r["label"]] < CLASSES.get(r["label"], 0):
            seen[r["label"]] += 1
            path = root / "images" / r["id"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(r["image"])
            with Image.open(io.BytesIO(r["image"])) as im:
                layout = np.asarray(im.convert("RGB").resize((4, 4)), np.float32).ravel() / 255
            rows.append({"id": r["id"], "uri": str(path), "label": r["label"], "vector": layout.tolist()})
    pq.write_table(pa.Table.from_pylist(rows), root / "embeddings.parquet")
    run_dir = root / "run"
    overrides = [
        f"input.path={root / 'embeddings.parquet'}",
        "input.format=embeddings",
        "input.embedding_column=vector",
        f"run_dir={run_dir}",
        "kmeans.n_clusters=[8,3]",
        "kmeans.sample_size=[3,2]",
        "kmeans.n_resampling_steps=[1,1]",
        "kmeans.in_process=true",
        "sample.target_size=40",
        "sample.multiplier=3",
        "report.enabled=false",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("curate", overrides=overrides), resolve=True)
    run_curate(RunDir(str(run_dir)), cfg)
    return run_dir


def _manifest(run_dir: Path) -> pa.Table:
    return pq.read_table(run_dir / "manifest.parquet")


def _cfg(fmt: str, source: str = "curated", **export) -> ExportConfig:
    return ExportConfig.from_job(fmt, source, {**load_group("export")["export"], **export})


def _by_key(manifest: pa.Table) -> dict[str, dict]:
    return {sample_key(r["id"]): r for r in manifest.to_pylist()}


@pytest.mark.slow
def test_imagefolder_links_load_with_torchvision_with_repeats(curated, tmp_path):
    from torchvision.datasets import ImageFolder

    manifest = _manifest(curated)
    mult = manifest.column("multiplicity").to_pylist()
    assert max(mult) > 1  # the fixture must exercise repeats
    record = run_export(RunDir(str(curated)), str(tmp_path / "out"), _cfg("imagefolder"))
    ds = ImageFolder(str(tmp_path / "out"))
    assert len(ds) == sum(mult) == record["samples"] == record["linked"]
    assert ds.classes == sorted(set(manifest.column("label").to_pylist()))
    rows = _by_key(manifest)
    per_id: Counter[str] = Counter()
    for path, cls in ds.samples:
        key = Path(path).stem.rsplit("_r", 1)[0] if "_r" in Path(path).stem[-4:] else Path(path).stem
        row = rows[key]
        assert ds.classes[cls] == row["label"]
        assert Path(path).is_symlink() and Path(path).resolve() == Path(row["uri"]).resolve()
        per_id[row["id"]] += 1
    assert per_id == dict(zip(manifest.column("id").to_pylist(), mult))
    image, _ = ds[0]
    assert image.size == (256, 256)


def test_imagefolder_copies_flattened_by_level_1(curated, tmp_path):
    from torchvision.datasets import ImageFolder

    manifest = _manifest(curated)
    cfg = _cfg("imagefolder", mode="copy", multiplicity="flatten", class_column="level_1")
    record = run_export(RunDir(str(curated)), str(tmp_path / "out"), cfg)
    ds = ImageFolder(str(tmp_path / "out"))
    assert len(ds) == manifest.num_rows == record["copied"] and record["class_column"] == "level_1"
    assert ds.classes == [f"{c:05d}" for c in sorted(set(manifest.column("level_1").to_pylist()))]
    rows = _by_key(manifest)
    for path, cls in ds.samples:
        assert not Path(path).is_symlink()
        row = rows[Path(path).stem]
        assert int(ds.classes[cls]) == row["level_1"]
        assert Path(path).read_bytes() == Path(row["uri"]).read_bytes()


def test_webdataset_shards_hold_the_image_and_its_manifest_row(curated, tmp_path):
    manifest = _manifest(curated)
    record = run_export(RunDir(str(curated)), str(tmp_path / "wds"), _cfg("webdataset", shard_size=16))
    total = sum(manifest.column("multiplicity").to_pylist())
    shards = sorted((tmp_path / "wds").glob("shard-*.tar"))
    assert [s.name for s in shards] == record["shards"] and len(shards) == math.ceil(total / 16)
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                samples[key][ext] = tar.extractfile(member).read()
    assert len(samples) == total
    by_id = {r["id"]: r for r in manifest.to_pylist()}
    for key, members in samples.items():
        image_ext = set(members) - {"json"}
        assert len(members) == 2 and image_ext <= {"jpg", "png", "tif"}, key  # named by the bytes' format
        row = json.loads(members["json"])
        assert row == json.loads(json.dumps(by_id[row["id"]], default=str))
        assert members[image_ext.pop()] == Path(row["uri"]).read_bytes()


def test_jsonl_one_row_per_line_repeats_honoured(curated, tmp_path):
    manifest = _manifest(curated)
    run_export(RunDir(str(curated)), str(tmp_path / "j"), _cfg("jsonl"))
    lines = [json.loads(line) for line in (tmp_path / "j" / "manifest.jsonl").read_text().splitlines()]
    expected = [r for r in manifest.to_pylist() for _ in range(r["multiplicity"])]
    assert lines == json.loads(json.dumps(expected, default=str))
    run_export(RunDir(str(curated)), str(tmp_path / "j"), _cfg("jsonl", multiplicity="flatten"), force=True)
    assert len((tmp_path / "j" / "manifest.jsonl").read_text().splitlines()) == manifest.num_rows


def test_object_store_run_and_output(curated):
    fs = fsspec.filesystem("memory")
    fs.pipe("/exportrun/manifest.parquet", (curated / "manifest.parquet").read_bytes())
    record = run_export(RunDir("memory://exportrun"), "memory://exported/wds", _cfg("webdataset", shard_size=1000))
    assert record["shards"] == ["shard-000000.tar"] and not fs.exists("/exported/wds.tmp")
    with fs.open("/exported/wds/shard-000000.tar", "rb") as fh, tarfile.open(fileobj=fh) as tar:
        names = tar.getnames()
    assert (
        len(names) == 2 * record["samples"]
        and json.loads(fs.cat("/exported/wds/export.json"))["format"] == "webdataset"
    )
    record = run_export(RunDir("memory://exportrun"), "memory://exported/folder", _cfg("imagefolder"))
    assert record["linked"] == 0 and record["copied"] == record["samples"]  # no links on an object store


def test_bad_requests_are_clear_errors(curated, tmp_path):
    run = RunDir(str(curated))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not empty; force=true replaces it"):
        run_export(run, str(tmp_path / "full"), _cfg("jsonl"))
    with pytest.raises(
        FileNotFoundError, match=r"no coreset/manifest.parquet \(source=coreset\): run `strata coreset`"
    ):
        run_export(run, str(tmp_path / "c"), _cfg("jsonl", source="coreset"))
    with pytest.raises(ValueError, match="export.class_column=labl: no such column"):
        run_export(run, str(tmp_path / "c"), _cfg("imagefolder", class_column="labl"))
    with pytest.raises(ValueError, match="format=tfrecord: choose one of imagefolder, webdataset, jsonl"):
        _cfg("tfrecord")
    text_run = tmp_path / "textrun"
    text_run.mkdir()
    pq.write_table(_manifest(curated).drop_columns(["uri"]), text_run / "manifest.parquet")
    with pytest.raises(ValueError, match="needs images, but source=curated has no 'uri' column"):
        run_export(RunDir(str(text_run)), str(tmp_path / "t"), _cfg("webdataset"))
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.slow
def test_strata_export_as_a_process(curated, tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "export", f"run_dir={curated}", "format=jsonl", f"output={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "as jsonl" in done.stdout and (out / "manifest.jsonl").exists()


def test_export_help_lists_its_settings(capsys, monkeypatch):
    import jobs.export

    monkeypatch.setattr(sys, "argv", ["strata export", "--help"])
    jobs.export.main()
    text = capsys.readouterr().out
    assert text.startswith("strata export [key=value ...]")
    for key in (
        "format=jsonl",
        "source=curated",
        "export.class_column=null",
        "export.shard_size=1000",
        "export.mode=link",
    ):
        assert key in text, key


def test_swipe_labels_get_their_images_from_the_run_embeddings(curated, tmp_path):
    import shutil

    run_dir = tmp_path / "labelled"
    shutil.copytree(curated / "embeddings", run_dir / "embeddings")
    ids = pq.read_table(curated / "embeddings", columns=["id"]).column("id").to_pylist()[:5]
    (run_dir / "labels").mkdir()
    labels = pa.table({"id": ids, "label": ["positive", "negative", "positive", "unsure", "positive"]})
    pq.write_table(labels, run_dir / "labels" / "labels.parquet")
    record = run_export(RunDir(str(run_dir)), str(tmp_path / "out"), _cfg("imagefolder", source="labels"))
    assert record["classes"] == {"negative": 1, "positive": 3, "unsure": 1} and record["linked"] == 5
    for i, label in zip(ids, labels.column("label").to_pylist()):
        (link,) = (tmp_path / "out" / label).glob(sample_key(i) + ".*")
        assert link.resolve().name == Path(i).name


def test_unreadable_and_non_image_rows_are_recorded_and_the_rest_exported(tmp_path, datasets_dir):
    image = pq.read_table(datasets_dir / "ucmerced", columns=["image"]).column("image")[0].as_py()
    (tmp_path / "ok.tif").write_bytes(image)
    (tmp_path / "note.txt").write_text("not an image")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    uris = [str(tmp_path / "ok.tif"), str(tmp_path / "note.txt"), str(tmp_path / "gone.jpg")]
    pq.write_table(
        pa.table({"id": ["ok", "note", "gone"], "uri": uris, "level_1": [0, 0, 1]}), run_dir / "manifest.parquet"
    )
    for fmt in ("webdataset", "imagefolder"):
        record = run_export(RunDir(str(run_dir)), str(tmp_path / fmt), _cfg(fmt, mode="copy"))
        assert record["copied"] == 1 and [f["id"] for f in record["failed"]] == ["note", "gone"], record
        assert "not an image" in record["failed"][0]["error"]
        assert json.loads((tmp_path / fmt / "export.json").read_text())["failed"] == record["failed"]
