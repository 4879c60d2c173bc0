"""Copy signatures taken where the pixels already are: the embed step and the import of embeddings
with a ``uri`` column store them in ``embeddings/``; dedup then opens no image file.

Images are generated here (smooth random colour fields, 64 px) with planted copies: a pixel-identical
re-save (exact), a JPEG re-encode, a flip and a downscale (near duplicates).
"""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.artifacts import EMBEDDINGS, PIXEL_HASH, SIGNATURE_ARRAYS, SIGNATURE_COLUMNS, read_run_embeddings
from pipeline.config import load_group
from pipeline.dedup.hashing import image_signatures, read_signatures
from pipeline.dedup.run import run_dedup
from pipeline.embed.stage import run_embed
from pipeline.io.tables import embeddings_to_arrow
from pipeline.progress import read_log
from pipeline.rundir import RunDir

N_ORIGINALS = 20
COPIES = {"exact": 0, "jpeg": 1, "flip": 2, "small": 3}  # copy kind -> original it copies
FIXED = {"seed": 0, "copies": {"threshold": 1.0}}  # a fixed residual threshold: no calibration sample to decode


def _original(seed: int) -> Image.Image:
    noise = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize((64, 64), Image.Resampling.BICUBIC)


def _copy(img: Image.Image, kind: str) -> tuple[Image.Image, str, dict]:
    if kind == "jpeg":
        return img, "JPEG", {"quality": 70}
    if kind == "flip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG", {}
    if kind == "small":
        return img.resize((48, 48), Image.Resampling.BILINEAR), "PNG", {}
    return img, "PNG", {"compress_level": 0}  # exact: same pixels, other bytes


@pytest.fixture()
def images(tmp_path) -> Path:
    """A folder of 20 originals and 4 copies (``copy_<kind>.*``)."""
    folder = tmp_path / "images" / "all"
    folder.mkdir(parents=True)
    for i in range(N_ORIGINALS):
        _original(i).save(folder / f"img{i:02d}.png")
    for kind, source in COPIES.items():
        img, fmt, kw = _copy(_original(source), kind)
        img.save(folder / f"copy_{kind}.{'jpg' if fmt == 'JPEG' else 'png'}", format=fmt, **kw)
    return tmp_path / "images"


def _input(path: Path, **kw) -> dict:
    return {**load_group("input/default"), "path": str(path), **kw}


def _embed_cfg(**kw) -> dict:
    return {"image_size": 64, "engine": "local", "batch_size": 8, **kw}


def _duplicates(run: RunDir) -> dict[str, tuple[str, str]]:
    t = pq.read_table(run.path("dedup", "duplicates.parquet"))
    return {r["id"]: (r["kept_id"], r["kind"]) for r in t.to_pylist()}


def _planted(found: dict[str, tuple[str, str]]) -> None:
    """Every planted copy, and nothing else, removed in favour of its own original."""
    pairs = {frozenset((k, v[0])): v[1] for k, v in found.items()}
    assert len(found) == len(COPIES)
    for kind, source in COPIES.items():
        copy = next(k for k in [*found, *(v[0] for v in found.values())] if k.startswith(f"all/copy_{kind}"))
        assert pairs[frozenset((copy, f"all/img{source:02d}.png"))] == (
            "exact" if kind == "exact" else "near_duplicate"
        )


def _strip_signatures(src: RunDir, dst: RunDir) -> None:
    """``dst``: ``src``'s embeddings as a run made before the signatures were stored."""
    for f in sorted(Path(src.path(EMBEDDINGS)).glob("*.parquet")):
        table = pq.read_table(f)
        out = Path(dst.path(EMBEDDINGS, f.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.drop_columns([c for c in SIGNATURE_COLUMNS if c in table.column_names]), out)


def _count_loads(monkeypatch) -> list[str]:
    """Every uri any image loader of dedup reads from now on."""
    import pipeline.io.sources as sources

    opened: list[str] = []
    real = sources.load_image_bytes

    def load(uri: str) -> bytes:
        opened.append(uri)
        return real(uri)

    monkeypatch.setattr(sources, "load_image_bytes", load)
    return opened


@pytest.mark.slow
def test_dedup_opens_no_image_file_when_signatures_are_present(images, tmp_path, monkeypatch, caplog):
    run = RunDir(str(tmp_path / "run"))
    counts = run_embed(run, _input(images), _embed_cfg())
    assert counts["kept"] == N_ORIGINALS + len(COPIES)
    table = pq.read_table(run.path(EMBEDDINGS))
    uris = table.column("uri").to_pylist()
    assert all(table.schema.field(c) for c in SIGNATURE_COLUMNS)
    # what the embed step stored is what decoding the files gives
    want = image_signatures([Path(u).read_bytes() for u in uris])
    got = read_signatures(table)
    assert got.digests == want.digests and all(got.digests)
    np.testing.assert_array_equal(got.grids, want.grids)
    np.testing.assert_array_equal(got.phash, want.phash)
    np.testing.assert_array_equal(got.pixels, want.pixels)
    # the pixel arrays stay dedup's: the embeddings' columns as the other steps read them leave them out
    carried, _ = read_run_embeddings(run)
    assert PIXEL_HASH in carried.column_names and not set(SIGNATURE_ARRAYS) & set(carried.column_names)

    # an older run directory (no signature columns): dedup decodes the uris, with a warning
    old = RunDir(str(tmp_path / "old"))
    _strip_signatures(run, old)
    with caplog.at_level(logging.WARNING, logger="pipeline.dedup.run"):
        run_dedup(old, FIXED)
    assert "carry no copy signatures" in caplog.text
    n = len(uris)
    assert any(line.split(" ", 1)[1].startswith(f"dedup/hash {n}/{n} img") for line in read_log(old))
    _planted(_duplicates(old))

    # a calibrated threshold makes synthetic copies of a seeded sample of pool images: those, no other, are read
    opened = _count_loads(monkeypatch)
    counts = run_dedup(run, {"seed": 0, "copies": {"calibration_sample": 6}})
    record = run.read_json("run.json")["counts"]["dedup"]["copies"]
    assert record["calibrated"] and record["sample"] == 6
    assert 0 < len(opened) <= 6 < counts["input"]

    # the images gone and every loader watched: dedup still finds the same duplicates, opening nothing
    shutil.rmtree(images)
    opened.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.dedup.run"):
        run_dedup(run, FIXED)
    assert opened == [] and "carry no copy signatures" not in caplog.text
    assert not any(" dedup/hash " in f" {line.split(' ', 1)[1]}" for line in read_log(run))
    assert _duplicates(run) == _duplicates(old)


def _imported_input(images: Path, tmp_path: Path) -> Path:
    """Embeddings made elsewhere: ``key``, ``vector`` and the ``uri`` of each image, plus a row whose
    file is missing and one whose file is not an image."""
    files = sorted((images / "all").iterdir())
    (tmp_path / "notes.txt").write_text("not an image")
    uris = [str(f) for f in files] + [str(tmp_path / "missing.png"), str(tmp_path / "notes.txt")]
    x = np.random.default_rng(0).normal(size=(len(uris), 8)).astype(np.float32)
    path = tmp_path / "vectors.parquet"
    pq.write_table(
        pa.table({"key": np.arange(len(uris)), "vector": embeddings_to_arrow(x), "uri": uris}),
        path,
        row_group_size=7,
    )
    return path


def _import(run: RunDir, path: Path, engine: str, **kw) -> dict:
    cfg = _input(path, format="embeddings", **{"id_column": "key", "embedding_column": "vector", **kw})
    return run_embed(run, cfg, {"engine": engine})


@pytest.mark.slow
def test_imported_embeddings_with_uri_carry_signatures_in_process_and_on_ray(
    ray_session, images, tmp_path, monkeypatch
):
    path = _imported_input(images, tmp_path)
    files = sorted((images / "all").iterdir())
    tables = {}
    for engine in ("local", "ray"):
        run = RunDir(str(tmp_path / engine))
        counts = _import(run, path, engine)
        n = len(files)
        assert counts["kept"] == n + 2 and counts["signatures"] == {"decoded": n, "undecodable": 2, "engine": engine}
        tables[engine] = pq.read_table(run.path(EMBEDDINGS))
    assert tables["local"].equals(tables["ray"])  # same rows, order and signatures on both engines
    table = tables["local"]
    assert table.column("uri").to_pylist()[: len(files)] == [str(f) for f in files]
    sig = read_signatures(table)
    want = image_signatures([f.read_bytes() for f in files] + [None, b"not an image"])
    assert sig.digests == want.digests and sig.digests[-2:] == [None, None]
    np.testing.assert_array_equal(sig.grids, want.grids)
    np.testing.assert_array_equal(sig.phash, want.phash)
    np.testing.assert_array_equal(sig.pixels, want.pixels)
    assert all(table.column(c).null_count == 2 for c in SIGNATURE_COLUMNS)

    # dedup of the import opens nothing: the copies are found from the stored signatures
    shutil.rmtree(images)
    opened = _count_loads(monkeypatch)
    run = RunDir(str(tmp_path / "local"))
    counts = run_dedup(run, FIXED)
    assert opened == [] and counts["exact"] == 1 and counts["near_duplicate"] == len(COPIES) - 1
    ids = dict(zip(table.column("id").to_pylist(), table.column("uri").to_pylist()))
    found = {Path(ids[k]).name: Path(ids[v[0]]).name for k, v in _duplicates(run).items()}
    assert {frozenset(p) for p in found.items()} == {
        frozenset((f"copy_{kind}.{'jpg' if kind == 'jpeg' else 'png'}", f"img{src:02d}.png"))
        for kind, src in COPIES.items()
    }


def test_imported_embeddings_without_uri_have_no_signatures(tmp_path):
    x = np.eye(4, dtype=np.float32)
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "embedding": embeddings_to_arrow(x)}), tmp_path / "e.parquet")
    run = RunDir(str(tmp_path / "run"))
    counts = _import(run, tmp_path / "e.parquet", "local", id_column="id", embedding_column="embedding")
    assert "signatures" not in counts
    assert not set(SIGNATURE_COLUMNS) & set(pq.read_schema(next(Path(run.path(EMBEDDINGS)).glob("*.parquet"))).names)


def test_signatures_round_trip_through_parquet_with_nulls():
    blobs = []
    for i in range(5):
        buf = io.BytesIO()
        _original(i).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    sig = image_signatures([*blobs[:2], b"broken", None, *blobs[2:]])
    from pipeline.dedup.hashing import with_signatures

    table = with_signatures(pa.table({"id": list("abcdefg")}), sig)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=3)
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    assert [back.schema.field(c).type for c in SIGNATURE_COLUMNS] == [
        pa.string(),
        pa.binary(32 * 32),
        pa.binary(64),
        pa.int64(),
    ]
    for start in (0, 1, 4):  # chunked and sliced columns read at their offset
        got = read_signatures(back.slice(start))
        assert got.digests == sig.digests[start:]
        np.testing.assert_array_equal(got.grids, sig.grids[start:])
        np.testing.assert_array_equal(got.phash, sig.phash[start:])
        np.testing.assert_array_equal(got.pixels, sig.pixels[start:])
    assert read_signatures(back.drop_columns(["d4_phash"])) is None  # incomplete: dedup decodes instead
