"""Dedup: exact hash groups, semantic leader grouping against brute force, accounting, run step
(semantic mode; copies: test_copies.py)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.dedup import run as dedup_run
from pipeline.dedup.config import KEEP_RULES
from pipeline.dedup.hashing import SignatureStage, pixel_hash
from pipeline.dedup.run import find_duplicates, run_dedup, semantic_in_batches
from pipeline.dedup.semantic import KEEP_PRIORITY, exact_duplicates, keep_priority, leader_groups, semantic_duplicates
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.progress import Progress, read_log
from pipeline.rundir import RunDir

torch.set_num_threads(1)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def with_copies(n: int, n_copies: int, d: int = 32, noise: float = 0.02, seed: int = 0):
    """n well-separated unit vectors + n_copies perturbed copies of random originals."""
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(n, d)))
    src = rng.choice(n, size=n_copies, replace=False)
    copies = unit(base[src] + noise * rng.normal(size=(n_copies, d)))
    return np.concatenate([base, copies]).astype(np.float32), src


def brute_leader(xn: np.ndarray, thr: float):
    kept_of = np.arange(len(xn))
    kept: list[int] = []
    for i in range(len(xn)):
        sims = xn[kept] @ xn[i] if kept else np.array([])
        if len(sims) and sims.max() >= thr:
            kept_of[i] = kept[int(np.argmax(sims))]
        else:
            kept.append(i)
    return kept_of


def _png(arr: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_pixel_hash_matches_pixels_not_bytes():
    arr = np.random.default_rng(0).integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    a, b = _png(arr), _png(arr, compress_level=0)
    assert a != b and pixel_hash(a) == pixel_hash(b)
    assert pixel_hash(_png(arr[:, ::-1].copy())) != pixel_hash(a)
    assert pixel_hash(b"not an image") is None and pixel_hash(None) is None
    out = SignatureStage()(pa.table({"image": pa.array([a, b, b"x"], pa.binary())}))
    assert out.column("pixel_hash").to_pylist() == [pixel_hash(a)] * 2 + [None]


def test_exact_duplicates_priority():
    hashes = ["a", "b", "a", None, None, "b", "a"]
    priority = np.array([5, 0, 1, 0, 0, 9, 2], dtype=float)
    dup, kept = exact_duplicates(hashes, priority)
    assert dict(zip(dup.tolist(), kept.tolist())) == {0: 2, 6: 2, 5: 1}


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), thr=st.floats(0.5, 0.99))
def test_leader_groups_match_brute_force(seed, thr):
    rng = np.random.default_rng(seed)
    xn = unit(rng.normal(size=(40, 3))).astype(np.float32)  # low dimension: many similar pairs
    kept_of, sim = leader_groups(xn, thr, block=7)
    np.testing.assert_array_equal(kept_of, brute_leader(xn.astype(np.float64), thr))
    removed = kept_of != np.arange(40)
    assert (kept_of[kept_of] == kept_of).all()  # representatives are kept
    assert (sim[removed] >= thr - 1e-6).all()
    kept = np.flatnonzero(~removed)
    s = xn[kept] @ xn[kept].T
    assert (s[np.triu_indices(len(kept), 1)] < thr + 1e-6).all()  # kept set is an eps-packing


@pytest.mark.parametrize("keep", ["centroid", "first", "random"])
def test_semantic_finds_injected_copies(keep):
    x, src = with_copies(400, 60)
    assignments = np.random.default_rng(0).integers(3, size=len(x))
    assignments[400:] = assignments[src]  # copies in their original's cluster
    dist = 1 - (unit(x) @ unit(x).mean(0))
    priority = keep_priority(len(x), keep, centroid_distance=dist, seed=1)
    kept_of, sim = semantic_duplicates(x, assignments, 0.03, priority, block=4096)
    pairs = {frozenset((400 + c, s)) for c, s in enumerate(src)}
    found = {frozenset((i, int(kept_of[i]))) for i in np.flatnonzero(kept_of != np.arange(len(x)))}
    assert found == pairs
    if keep == "first":
        assert (kept_of[400:] == src).all()


def test_semantic_respects_clusters_and_bad_eps():
    x = np.repeat(unit(np.random.default_rng(0).normal(size=(5, 8))), 2, axis=0).astype(np.float32)
    kept_of, _ = semantic_duplicates(x, np.arange(10) % 2, 0.01, np.arange(10.0), block=4096)
    assert (kept_of == np.arange(10)).all()  # every copy sits in the other cluster
    with pytest.raises(ValueError):
        semantic_duplicates(x, np.zeros(10, int), 1.5, np.arange(10.0), block=4096)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 80), n_exact=st.integers(0, 10), seed=st.integers(0, 50))
def test_accounting(n, n_exact, seed):
    rng = np.random.default_rng(seed)
    x = unit(rng.normal(size=(n, 4))).astype(np.float32)
    hashes = [str(h) for h in rng.integers(0, max(1, n - n_exact), size=n)]
    cfg = {"eps": 0.05, "points_per_cluster": 20, "seed": seed, "semantic": True, "near_duplicate": False}
    found = find_duplicates(x, cfg, pixel_hashes=hashes)
    kept_of, kind = found.kept_of, found.kind
    kept = kind == 0
    assert (kept_of[kept] == np.flatnonzero(kept)).all()
    assert kept[kept_of].all()  # every duplicate points at a kept row
    assert kept.sum() + (~kept).sum() == n
    assert len({hashes[i] for i in np.flatnonzero(kept)}) == kept.sum()  # no exact copy survives


def test_semantic_in_batches_of_whole_clusters_matches_one_pass(monkeypatch):
    x, src = with_copies(300, 60, seed=4)
    base = np.random.default_rng(1).integers(0, 9, 300)
    assignments = np.concatenate([base, base[src]])  # a copy in its original's cluster
    priority = np.random.default_rng(2).permutation(len(x)).astype(np.float64)
    whole = semantic_duplicates(x, assignments, 0.05, priority, block=4096)
    monkeypatch.setattr(dedup_run, "SEMANTIC_BATCH_ROWS", 70)
    bar = Progress("dedup/semantic", len(x), stream=None)
    batched = semantic_in_batches(x, assignments, 0.05, priority, block=4096, bar=bar)
    np.testing.assert_array_equal(batched[0], whole[0])
    np.testing.assert_array_equal(batched[1], whole[1])
    assert bar.done == len(x) and (whole[0] != np.arange(len(x))).sum() == 60


def test_run_dedup_writes_outputs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup_run, "HASH_CHUNK", 100)
    monkeypatch.setattr(dedup_run, "SEMANTIC_BATCH_ROWS", 50)
    x, src = with_copies(300, 30, seed=2)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (4, 4, 3), dtype=np.uint8) for _ in range(len(x))]
    imgs[5] = imgs[7]  # same pixels, different bytes below
    uris = []
    for i, arr in enumerate(imgs):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(_png(arr, compress_level=1 if i == 5 else 6))
        uris.append(str(p))
    x[5] = x[7]
    ids = [f"id{i}" for i in range(len(x))]
    run = RunDir(str(tmp_path / "run"))
    write_parquet_atomic(
        pa.table({"id": ids, "uri": uris, "embedding": embeddings_to_arrow(x)}),
        run.path("embeddings", "part-00000.parquet"),
    )
    cfg = {"eps": 0.03, "points_per_cluster": 100, "semantic": True, "near_duplicate": False}
    counts = run_dedup(run, {"enabled": True, **cfg})
    import pyarrow.parquet as pq

    dups = pq.read_table(run.path("dedup", "duplicates.parquet")).to_pylist()
    kept = pq.read_table(run.path("dedup", "kept.parquet")).column("id").to_pylist()
    assert counts == {
        "input": 330,
        "kept": len(kept),
        "duplicates": len(dups),
        "exact": 1,
        "near_duplicate": 0,
        "semantic": len(dups) - 1,
    }
    assert sorted(kept + [d["id"] for d in dups]) == sorted(ids)
    exact = [d for d in dups if d["kind"] == "exact"]
    assert {exact[0]["id"], exact[0]["kept_id"]} == {"id5", "id7"}
    semantic = [d for d in dups if d["kind"] == "semantic"]
    assert all(d["distance"] == pytest.approx(1 - d["similarity"]) and d["similarity"] >= 0.97 for d in semantic)
    # each pass's progress in progress.log: per chunk of images hashed, per batch of clusters compared
    lines = [line.split(" ", 1)[1] for line in read_log(run)]
    hashing = [line for line in lines if line.startswith("dedup/hash ")]
    assert hashing[0].startswith("dedup/hash 100/330 img (30%)") and hashing[-1].startswith("dedup/hash 330/330 img")
    semantic = [line for line in lines if line.startswith("dedup/semantic ")]
    assert semantic[-1].startswith("dedup/semantic 329/329 img (100%)")  # all but the exact duplicate
    assert semantic[0].split()[1] != "329/329"  # the first batch of clusters was reported on its own
    assert run_dedup(run, cfg) == counts  # resumed from marker
    with pytest.raises(ValueError, match=r"dedup\.epsilon: did you mean dedup\.eps"):
        run_dedup(run, {"epsilon": 0.1})


def test_keep_rules_by_hand_and_every_configurable_rule_has_an_entry():
    assert tuple(KEEP_PRIORITY) == KEEP_RULES  # dedup.keep validation and the registry name the same rules
    pixels = np.array([10, 40, 40, 5])
    assert keep_priority(4, "largest", pixels=pixels, seed=0).tolist() == [2, 0, 1, 3]
    assert keep_priority(4, "largest", seed=0).tolist() == [0, 1, 2, 3]
    assert keep_priority(3, "centroid", centroid_distance=np.array([0.3, 0.1, 0.2]), seed=0).tolist() == [0.3, 0.1, 0.2]
    assert sorted(keep_priority(5, "random", seed=3).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="keep must be one of"):
        keep_priority(3, "smallest", seed=0)
