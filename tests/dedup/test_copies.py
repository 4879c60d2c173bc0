"""Near-duplicate (copy) detection: pHash vs imagehash, D4 invariance, hash-band and IVF candidates vs
brute force, crop registration, the residual, grouping without chaining, calibration (copy-free,
copy-heavy, unreliable)."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from pipeline.dedup.calibration import choose_threshold, joint_rank, synthetic_copy
from pipeline.dedup.candidates import band_radius, descriptor_pairs, hamming_pairs
from pipeline.dedup.config import dedup_config
from pipeline.dedup.copies import copy_distances, copy_scores
from pipeline.dedup.grouping import keeper_groups
from pipeline.dedup.hashing import image_signatures
from pipeline.dedup.perceptual import d4, d4_phash, descriptors, grey_grid, hamming, phash_bits
from pipeline.dedup.run import KINDS, find_duplicates
from pipeline.dedup.semantic import leaders_from_pairs

T = Image.Transpose

# the descriptor index settings of conf/dedup (seeded)
IVF = {k: dedup_config({})["copies"][k] for k in ("flat_max", "nprobe", "list_size", "train_per_list", "train_iters")}
IVF["seed"] = 0
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
    stats: dict = {}
    i, j = hamming_pairs(hashes, radius, chunk=100, stats=stats)  # small chunks: the join is cut many times
    assert set(zip(i.tolist(), j.tolist())) == want
    assert {(a, 40 + a) for a in range(10)} <= want
    assert stats == {"radius": radius, "bands": radius + 1, "skipped_queries": 0}


def test_hamming_pairs_skip_degenerate_buckets_and_say_so():
    rng = np.random.default_rng(0)
    grids = rng.integers(0, 256, (50, 32, 32), dtype=np.uint8)
    grids[:20] = 128  # flat images: one hash shared by 20 images
    grids[20:25] = np.rot90(grids[30:35], 1, (1, 2))
    hashes = d4_phash(grids)
    full = set(zip(*(a.tolist() for a in hamming_pairs(hashes, 4))))
    stats: dict = {}
    capped = set(zip(*(a.tolist() for a in hamming_pairs(hashes, 4, max_bucket=10, stats=stats))))
    assert {(a, b) for a in range(20) for b in range(a + 1, 20)} <= full
    assert capped < full and stats["skipped_queries"] >= 20 * 8  # every flat image's every symmetry met the big bucket
    assert {(20 + k, 30 + k) for k in range(5)} <= capped  # the rest is still found


def test_band_radius_keeps_buckets_small():
    assert band_radius(500, 10, 16) == 10  # small pools: the full radius
    assert band_radius(1_000_000, 10, 16) == 3  # 4 bands of 16 bits: 15 images per bucket
    for n in (10_000, 100_000, 10_000_000):
        r = band_radius(n, 10, 16)
        assert n / 2 ** (64 / (r + 1)) <= 16 < n / 2 ** (64 / (r + 2))


def test_descriptor_pairs_match_brute_force():
    rng = np.random.default_rng(1)
    grids = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8)
    desc = descriptors(grids)
    sim = np.einsum("igd,jd->ijg", desc, desc[:, 0]).max(-1)
    np.fill_diagonal(sim, -np.inf)
    want = {tuple(sorted((a, int(b)))) for a in range(40) for b in np.argsort(-sim[a])[:2]}
    i, j = descriptor_pairs(desc, 2, **IVF)
    assert set(zip(i.tolist(), j.tolist())) == want


def test_descriptor_pairs_ivf_finds_the_copies_flat_finds():
    rng = np.random.default_rng(2)
    small = rng.random((600, 1, 12, 12), dtype=np.float32)
    grids = np.stack([np.asarray(Image.fromarray((g[0] * 255).astype(np.uint8)).resize((32, 32))) for g in small])
    grids[500:] = np.clip(np.rot90(grids[:100], 1, (1, 2)).astype(int) + rng.integers(-8, 9, (100, 32, 32)), 0, 255)
    desc = descriptors(grids)
    flat = set(zip(*(a.tolist() for a in descriptor_pairs(desc, 3, **IVF))))
    ivf = set(zip(*(a.tolist() for a in descriptor_pairs(desc, 3, **{**IVF, "flat_max": 100, "nprobe": 4}, shard=128))))
    planted = {(k, 500 + k) for k in range(100)}
    assert planted <= flat and len(planted & ivf) >= 98  # approximate, but the copies are found


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
    _, res_own = copy_scores(hashes, grids, np.arange(6), 6 + np.arange(6))
    _, res_direct = copy_scores(hashes, grids, np.arange(6), 6 + np.arange(6), register=np.zeros(6, bool))
    _, res_other = copy_scores(hashes, grids, np.arange(6), 6 + (np.arange(6) + 1) % 6)
    assert (res_own <= res_direct).all() and res_own.max() < res_other.min()


def test_residual_tells_apart_digits_phash_cannot():
    """Distinct digits <= 6 pHash bits apart (closer than many copies): their residual is far above a
    re-encoded copy's."""
    from sklearn.datasets import load_digits

    imgs = [
        Image.fromarray((g * 255 / 16).astype(np.uint8)).resize((56, 56)).convert("RGB")
        for g in load_digits().images[:300]
    ]
    grids = np.stack([grey_grid(Image.open(io.BytesIO(jpeg(im)))) for im in imgs])
    copies = np.stack([grey_grid(Image.open(io.BytesIO(jpeg(im, 40)))) for im in imgs[:50]])
    hashes = d4_phash(np.concatenate([grids, copies]))
    all_grids = np.concatenate([grids, copies])
    bits = brute_min_hamming(hashes[:300])
    np.fill_diagonal(bits, 99)
    a, b = np.nonzero(np.triu(bits <= 6, 1))
    assert len(a) >= 3  # pHash calls these distinct digits copies
    _, distinct = copy_scores(hashes, all_grids, a, b)
    _, copy = copy_scores(hashes, all_grids, np.arange(50), 300 + np.arange(50))
    assert copy.max() < np.quantile(distinct, 0.05)


def test_no_chaining():
    """a ~ b, b ~ c, a !~ c: c is not removed for a; a removed image is a verified copy of its kept one."""
    asked = []

    def verify(x, y):
        asked.extend(zip(x.tolist(), y.tolist()))
        return np.zeros(len(x), bool), np.full(len(x), 99.0)

    # 0 ~ 1 ~ 2 ~ 3 (a chain); 4 ~ 5 and 4 ~ 6 (a star); priority: lower row first
    i, j = np.array([0, 1, 2, 4, 4]), np.array([1, 2, 3, 5, 6])
    kept_of, dist = keeper_groups(7, i, j, np.array([2.0, 2, 2, 4, 6]), np.arange(7), verify)
    np.testing.assert_array_equal(kept_of, [0, 0, 2, 2, 4, 4, 4])
    assert set(asked) == {(2, 0), (3, 0)}  # members not linked to their keeper are verified against it
    np.testing.assert_array_equal(dist, [0, 2, 0, 2, 0, 4, 6])
    # when the keeper check passes, the member goes to the keeper directly
    kept_of, _ = keeper_groups(
        4, i[:3], j[:3], np.full(3, 2.0), np.arange(4), lambda x, y: (np.ones(len(x), bool), np.full(len(x), 5.0))
    )
    np.testing.assert_array_equal(kept_of, [0, 0, 0, 0])


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


def _pool(copy_scores_: np.ndarray, distinct: np.ndarray, n: int):
    """R(t) of a pool of n images: its copies removed at their residual, its distinct images at theirs."""
    return lambda t: int((copy_scores_ <= t).sum() + (distinct <= t).sum()), n


LEVELS = [0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]


def test_threshold_sits_between_copies_and_distinct_images():
    rng = np.random.default_rng(0)
    synthetic = rng.gamma(2.0, 0.05, 1000)  # residuals of the synthetic copies
    distinct = rng.uniform(0.3, 3.0, 5000)  # nearest residual of distinct images: 0.3 and up
    free = choose_threshold(synthetic, *_pool(np.zeros(0), distinct, 5000), recall_levels=LEVELS, max_false_match=0.005)
    assert free["reliable"] and free["false_match_rate"] <= 0.005 and free["copy_share"] == 0
    assert (distinct <= free["threshold"]).mean() <= 0.006
    # copy-heavy: 75% of the pool are copies: they are not counted as false matches and the
    # threshold stays below the distinct images
    real = rng.gamma(2.0, 0.05, 15000)
    heavy = choose_threshold(synthetic, *_pool(real, distinct, 20000), recall_levels=LEVELS, max_false_match=0.005)
    assert heavy["reliable"] and heavy["copy_share"] == pytest.approx(0.75, abs=0.02)
    assert (distinct <= heavy["threshold"]).mean() <= 0.01 and (real <= heavy["threshold"]).mean() >= 0.9
    # copies harder than the synthetic ones: m is underestimated, which errs towards keeping
    harder = choose_threshold(
        synthetic, *_pool(real * 1.3, distinct, 20000), recall_levels=LEVELS, max_false_match=0.005
    )
    assert harder["copy_share"] < 0.75
    assert harder["threshold"] is None or (distinct <= harder["threshold"]).mean() <= 0.01
    # unreliable: distinct images from as close as the copies to far beyond -> no threshold, say so
    # (distinct images distributed exactly like copies would be indistinguishable from copies)
    close = rng.uniform(0.0, 1.0, 5000)
    bad = choose_threshold(synthetic, *_pool(np.zeros(0), close, 5000), recall_levels=LEVELS, max_false_match=0.005)
    assert bad["threshold"] is None and not bad["reliable"] and bad["false_match_rate"] > 0.005


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
    assert found.calibration["calibrated"] and found.calibration["reliable"]
    # A fixed threshold is used as given: 0 finds only the exact copy and no distinct image goes;
    # the calibrated value, fixed, gives the calibrated result.
    exact_only = find_duplicates(None, {"seed": 0, "copies": {"threshold": 0}}, signatures=image_signatures(pool))
    assert not exact_only.calibration["calibrated"] and exact_only.calibration["threshold"] == 0
    removed = set(np.flatnonzero(exact_only.kind > 0).tolist())
    assert 66 in removed and removed <= set(range(60, 67))
    t = found.calibration["threshold"]
    fixed = find_duplicates(None, {"seed": 0, "copies": {"threshold": t}}, signatures=image_signatures(pool))
    np.testing.assert_array_equal(fixed.kept_of, found.kept_of)


def test_joint_rank_lets_either_signal_veto():
    score = joint_rank(np.array([0, 0, 2, 4, 6]), np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    np.testing.assert_allclose(score(np.array([0, 6, 0, 8]), np.array([0.1, 0.1, 0.45, 0.05])), [0.0, 0.8, 0.8, 1.0])


def test_copy_plan_grows_linearly_past_flat_max():
    from pipeline.dedup.config import dedup_config
    from pipeline.dedup.plan import format_copies_plan, plan_copies

    cfg = dedup_config({})["copies"]
    small, big = plan_copies(10**6, cfg, 2), plan_copies(10**8, cfg, 2)
    assert small["radius"] == 3 and big["radius"] == 1 and big["index"].startswith("ivf")
    # hash bands, verification and the IVF kNN (constant list size, HNSW over the lists) are linear
    assert big["hash_bands_s"] / small["hash_bands_s"] < 150 and big["verify_s"] / small["verify_s"] == pytest.approx(
        100
    )
    assert big["descriptor_knn_s"] / small["descriptor_knn_s"] == pytest.approx(100, rel=0.01)
    assert "N=100,000,000" in format_copies_plan(big)


def test_report_says_when_copy_detection_is_unreliable():
    from pipeline.report.html import copy_detection_sentence

    bad = {"calibrated": True, "reliable": False, "threshold": None, "false_match_rate": 0.022}
    assert "unreliable" in copy_detection_sentence(bad) and "2.2%" in copy_detection_sentence(bad)
    good = {
        "calibrated": True,
        "reliable": True,
        "sample": 1000,
        "recall_estimate": 0.98,
        "false_match_rate": 0.002,
        "copy_share": 0.1,
    }
    assert "recall 98%" in copy_detection_sentence(good) and copy_detection_sentence({"calibrated": False}) == ""


@pytest.mark.slow
def test_copy_heavy_pool_calibrates_and_removes_only_copies():
    """75% of the pool are copies (6 per source, every transform): the calibration counts them as
    copies, not as false matches, and every removal is a copy of its own source."""
    originals = [jpeg(texture(s, 96)) for s in range(40)]
    rng = np.random.default_rng(1)
    kinds = ("jpeg", "resize", "crop", "flip", "rot90", "colour")
    sources = np.repeat(np.arange(20), 6)
    pool = originals + [
        synthetic_copy(Image.open(io.BytesIO(originals[s])).convert("RGB"), kinds[k % 6], rng)
        for k, s in enumerate(sources)
    ]
    picture = np.concatenate([np.arange(40), sources])
    found = find_duplicates(
        None, {"seed": 0}, signatures=image_signatures(pool), load=lambda rows: [pool[r] for r in rows]
    )
    rec = found.calibration
    assert rec["reliable"] and rec["copy_share"] == pytest.approx(120 / 160, abs=0.08)
    removed = np.flatnonzero(found.kind > 0)
    assert (picture[removed] == picture[found.kept_of[removed]]).all()  # precision 1, no chaining across pictures
    assert (found.kept_of[40:] == found.kept_of[sources]).mean() >= 0.9  # recall
    assert set(picture[found.kind == 0]) == set(range(40))  # no picture lost
