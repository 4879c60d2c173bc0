"""Near-duplicate (copy) detection: pHash vs imagehash, D4 invariance, FAISS pairs vs brute force,
crop registration, greedy grouping from pairs, calibration between two distributions."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from pipeline.dedup import (
    KINDS,
    choose_threshold,
    copy_distances,
    d4_phash,
    find_duplicates,
    grey_grid,
    image_signatures,
    leaders_from_pairs,
    synthetic_copy,
)
from pipeline.dedup.copies import descriptor_pairs, hamming_pairs
from pipeline.dedup.perceptual import d4, descriptors, hamming, phash_bits

T = Image.Transpose
PIL_D4 = (
    None,
    T.FLIP_LEFT_RIGHT,
    T.FLIP_TOP_BOTTOM,
    T.ROTATE_90,
    T.ROTATE_180,
    T.ROTATE_270,
    T.TRANSPOSE,
    T.TRANSVERSE,
)


def texture(seed: int, side: int = 96) -> Image.Image:
    """A smooth random colour image (distinct seeds: unrelated pictures)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def brute_min_hamming(hashes: np.ndarray) -> np.ndarray:
    """(N, N) min over g of Hamming(hashes[i, g], hashes[j, 0]), bit by bit."""
    bits = np.unpackbits(hashes, axis=-1).astype(np.int64)  # (N, 8, 64)
    return np.abs(bits[:, None, :, :] - bits[None, :, 0, None, :]).sum(-1).min(-1)


def test_phash_is_imagehash_bit_for_bit():
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 256, (32, 32), dtype=np.uint8), grey_grid(texture(1))]
    for g in grids:
        ref = np.packbits(imagehash.phash(Image.fromarray(g)).hash.ravel())
        np.testing.assert_array_equal(phash_bits(g), ref)
        for op, sym in zip(PIL_D4, d4(g)):  # d4 order matches PIL's transposes
            ref = Image.fromarray(g) if op is None else Image.fromarray(g).transpose(op)
            np.testing.assert_array_equal(np.asarray(ref), sym)


def test_d4_invariance_is_exact():
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    base = d4_phash(grey_grid(img)[None])[0]
    for op in PIL_D4[1:]:
        h = d4_phash(grey_grid(img.transpose(op))[None])[0]
        assert sorted(map(bytes, h)) == sorted(map(bytes, base))  # the same 8 hashes, permuted
        assert hamming(h, base[0][None]).min() == 0 and hamming(base, h[0][None]).min() == 0
    other = d4_phash(grey_grid(texture(9, 32))[None])[0]
    assert hamming(other, base[0][None]).min() > 8


@pytest.mark.parametrize("radius", [0, 6, 12])
def test_hamming_pairs_match_brute_force(radius):
    rng = np.random.default_rng(radius)
    grids = rng.integers(0, 256, (60, 32, 32), dtype=np.uint8)
    grids[40:50] = np.rot90(grids[:10], 1, (1, 2))  # symmetric copies: distance 0
    grids[50:] = np.clip(grids[10:20].astype(int) + rng.integers(-30, 30, (10, 32, 32)), 0, 255)
    hashes = d4_phash(grids)
    ref = brute_min_hamming(hashes)
    ref = np.minimum(ref, ref.T)  # a pair is found from either end
    want = {(a, b) for a, b in zip(*np.nonzero(ref <= radius)) if a < b}
    i, j = hamming_pairs(hashes, radius, chunk=100)
    assert set(zip(i.tolist(), j.tolist())) == want
    assert {(a, 40 + a) for a in range(10)} <= want


def test_descriptor_pairs_match_brute_force():
    rng = np.random.default_rng(1)
    grids = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    desc = descriptors(grids)
    sim = np.einsum("igd,jd->ijg", desc, desc[:, 0]).max(-1)
    np.fill_diagonal(sim, -np.inf)
    want = {tuple(sorted((a, int(b)))) for a in range(40) for b in np.argsort(-sim[a])[:2]}
    i, j = descriptor_pairs(desc, 2)
    assert set(zip(i.tolist(), j.tolist())) == want


def test_copy_distance_registers_crops():
    rng = np.random.default_rng(0)
    sources = [texture(s, 160) for s in range(6)]
    crops = []
    for im in sources:
        c = round(160 * 0.9)
        x, y = rng.integers(0, 160 - c + 1, 2)
        crops.append(Image.open(io.BytesIO(jpeg(im.crop((x, y, x + c, y + c)).transpose(Image.Transpose.ROTATE_90)))))
    grids = np.stack([grey_grid(im) for im in sources + crops])
    hashes = d4_phash(grids)
    own = copy_distances(hashes, grids, np.arange(6), 6 + np.arange(6))
    direct = hamming(hashes[np.arange(6)], hashes[6 + np.arange(6), 0][:, None]).min(1)
    other = copy_distances(hashes, grids, np.arange(6), 6 + (np.arange(6) + 1) % 6)
    assert (own <= 6).all() and own.sum() < direct.sum()  # registration recovers the crop
    assert (other > 10).all()


def test_leaders_from_pairs_match_brute_force():
    rng = np.random.default_rng(2)
    n = 30
    i, j = rng.integers(0, n, 80), rng.integers(0, n, 80)
    keep = i < j
    i, j = i[keep], j[keep]
    s = rng.random(len(i)).astype(np.float32)
    kept_of, sim = leaders_from_pairs(n, i, j, s)
    link = {(a, b): v for a, b, v in zip(i.tolist(), j.tolist(), s.tolist())}
    ref = np.arange(n)
    kept: list[int] = []
    for r in range(n):  # a row stays unless an earlier kept row links to it; joins the most similar one
        linked = [(link[(k, r)], k) for k in kept if (k, r) in link]
        if linked:
            ref[r] = max(linked)[1]
        else:
            kept.append(r)
    np.testing.assert_array_equal(kept_of, ref)
    assert (sim[kept_of == np.arange(n)] == 1).all()


def test_threshold_sits_between_copies_and_distinct_images():
    rng = np.random.default_rng(0)
    copies = rng.choice([0, 2, 4, 6, 8], size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    distinct = rng.choice(np.arange(6, 30, 2), size=5000, p=np.r_[[0.001, 0.01], np.full(10, 0.0989)])
    out = choose_threshold(copies, distinct, min_threshold=4, max_threshold=10, max_false_match=0.005)
    assert out["threshold"] == 6  # 0.1% of distinct images at <= 6, 1% more at 8
    assert out["recall_estimate"] == pytest.approx((copies <= 6).mean(), abs=1e-4)
    assert out["false_match_rate"] <= 0.005
    # a pool that is 30% copies of each other: the copies are not counted as false matches (the
    # threshold does not collapse to min_threshold; m is estimated within a few percent, which can
    # hide the distinct tail: 8 is chosen here)
    contaminated = np.concatenate([distinct, rng.choice([0, 2, 4, 6, 8], 2000, p=[0.5, 0.2, 0.15, 0.1, 0.05])])
    out = choose_threshold(copies, contaminated, min_threshold=4, max_threshold=10, max_false_match=0.005)
    assert out["threshold"] in (6, 8) and out["copy_share"] == pytest.approx(2000 / 7000, abs=0.04)
    assert choose_threshold(copies, np.zeros(100), min_threshold=4, max_threshold=10, max_false_match=0.0)[
        "threshold"
    ] in (4, 6, 8, 10)


def test_find_duplicates_finds_every_kind_of_synthetic_copy():
    images = [jpeg(texture(s, 128)) for s in range(60)]
    rng = np.random.default_rng(5)
    kinds = ("jpeg", "resize", "crop", "flip", "rot90", "colour")
    copies = [
        synthetic_copy(Image.open(io.BytesIO(images[k])).convert("RGB"), kind, rng) for k, kind in enumerate(kinds)
    ]
    pool = images + copies + [images[7]]  # and one exact copy
    found = find_duplicates(
        None, {"seed": 0}, signatures=image_signatures(pool), load=lambda rows: [pool[r] for r in rows]
    )
    removed = set(np.flatnonzero(found.kind > 0).tolist())
    assert removed == set(range(60, 67))  # the largest image of each group is kept: the originals
    assert [int(found.kept_of[60 + k]) for k in range(6)] == list(range(6))
    assert KINDS[found.kind[66]] == "exact" and found.kept_of[66] == 7
    assert found.calibration["calibrated"] and 4 <= found.calibration["threshold"] <= 10
    # A fixed threshold is used as given. At 0 bits only lossless copies are certain (the exact one;
    # a JPEG re-encode moves a few pHash bits, by how many depends on the codec build), and no
    # distinct image goes; at the stated lower bound of calibration (min_threshold 4) the D4 copies
    # (flip, rot90) are found whatever the codec.
    exact_only = find_duplicates(None, {"seed": 0, "copies": {"threshold": 0}}, signatures=image_signatures(pool))
    assert not exact_only.calibration["calibrated"] and exact_only.calibration["threshold"] == 0
    removed = set(np.flatnonzero(exact_only.kind > 0).tolist())
    assert 66 in removed and removed <= set(range(60, 67))
    fixed = find_duplicates(None, {"seed": 0, "copies": {"threshold": 4}}, signatures=image_signatures(pool))
    assert not fixed.calibration["calibrated"] and fixed.calibration["threshold"] == 4
    assert {60 + k for k in (3, 4)} <= set(np.flatnonzero(fixed.kind == 2).tolist()) <= set(range(60, 66))
    assert [int(fixed.kept_of[60 + k]) for k in (3, 4)] == [3, 4]
