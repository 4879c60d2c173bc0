"""Copy decisions that hold on any collection: the detail gate (near-flat images it cannot verify
are kept), its detail-consistency test, and the retry with a finer crop registration."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.dedup.calibration import detail_shift, gated_threshold, grid_detail, joint_rank, synthetic_copy
from pipeline.dedup.copies import copy_scores
from pipeline.dedup.hashing import image_signatures
from pipeline.dedup.perceptual import d4_phash, grey_grid
from pipeline.dedup.run import find_duplicates

LEVELS = [0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0]
DETAIL_LEVELS = [0, 0.1, 0.2, 0.3, 0.4, 0.5]


def texture(seed: int, side: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC)


def near_flat(seed: int, side: int = 64) -> Image.Image:
    """A plain colour with a faint ramp and pixel noise (a patch of sky): std ~1 grey level."""
    rng = np.random.default_rng(1000 + seed)
    base = rng.integers(60, 200, 3)
    ramp = np.linspace(-1, 1, side)[:, None, None] * rng.uniform(-3, 3)
    img = base + ramp + rng.normal(0, 1.0, (side, side, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def test_grid_detail_is_the_grey_level_std():
    grids = np.stack([np.full((32, 32), 7, np.uint8), np.tile(np.array([0, 10], np.uint8), (32, 16))])
    np.testing.assert_allclose(grid_detail(grids), [0.0, 5.0])


def test_detail_shift_flags_removals_plainer_than_the_copies_found():
    rng = np.random.default_rng(0)
    found = rng.uniform(0, 100, 2000)
    assert abs(detail_shift(rng.uniform(0, 100, 200), found)) < 2.5  # copies like the synthetic ones
    assert detail_shift(rng.uniform(0, 30, 12), found) < -2.5  # a dozen near-flat pairs
    assert detail_shift(np.zeros(0), found) == 0.0


def _gate_case(flat_pairs: int, flat_detail: tuple[float, float] = (0, 2)):
    """A pool of 400 textured images (detail 20-80) and 100 near-flat ones (detail ``flat_detail``).
    Synthetic copies of textured sources score 0-4 bits / residual 0-0.3, of flat sources anything
    up to 30 bits / 1.2 (noise). The pool holds no copies; ``flat_pairs`` pairs of distinct flat
    images score like flat copies, and 200 textured pairs are far. Returns the gate's output and
    the pool's groups at a threshold."""
    rng = np.random.default_rng(0)
    detail = np.concatenate([rng.uniform(20, 80, 400), rng.uniform(*flat_detail, 100)])
    src = rng.choice(500, 1000)
    flat_src = src >= 400
    noisy = flat_src & (flat_detail[1] < 20)  # "flat" images as detailed as the rest: copies tight too
    bits = np.where(noisy, rng.integers(0, 31, 1000), rng.integers(0, 5, 1000))
    res = np.where(noisy, rng.uniform(0, 1.2, 1000), rng.uniform(0, 0.3, 1000))
    fi = 400 + rng.choice(100, flat_pairs, replace=False)
    fj = 400 + (fi - 400 + 1 + rng.integers(0, 98, flat_pairs)) % 100
    ti, tj = rng.choice(400, 200), rng.choice(400, 200)
    i, j = np.concatenate([fi, ti]), np.concatenate([fj, tj])
    pbits = np.concatenate([rng.integers(4, 25, flat_pairs), rng.integers(20, 40, 200)])  # flat: like flat copies
    pres = np.concatenate([rng.uniform(0.2, 1.0, flat_pairs), rng.uniform(0.8, 2.0, 200)])

    def grouped(t, score, verifiable):
        kept_of = np.arange(500)
        link = (score(pbits, pres) <= t) & verifiable[i] & verifiable[j] & (i != j)
        kept_of[np.maximum(i, j)[link]] = np.minimum(i, j)[link]
        return kept_of

    out = gated_threshold(
        bits,
        res,
        detail[src],
        detail,
        grouped,
        detail_levels=DETAIL_LEVELS,
        recall_levels=LEVELS,
        max_false_match=0.002,
    )
    return out, grouped


def test_gate_keeps_near_flat_images_it_cannot_verify():
    (record, score, verifiable, copy_score), grouped = _gate_case(flat_pairs=40)
    assert record["reliable"] and record["detail_level"] > 0
    assert not verifiable[400:].any() and verifiable[:400].all()  # the cut falls between the two kinds
    assert record["unverifiable"] == 100
    kept_of = grouped(record["threshold"], score, verifiable)
    assert (kept_of == np.arange(500)).all()  # no distinct flat image removed
    # textured copies are still found; flat ones count as missed in the recall estimate
    assert 0.7 <= record["recall_estimate"] <= 0.85 and np.isinf(copy_score).sum() > 100


def test_gate_stays_open_on_a_collection_it_can_verify():
    (record, _, verifiable, _), _ = _gate_case(flat_pairs=0, flat_detail=(20, 80))
    assert record["reliable"] and record["detail_level"] == 0 and verifiable.all() and record["unverifiable"] == 0


def test_joint_rank_of_a_gated_sample_uses_its_own_copies():
    bits, res = np.array([0, 0, 2, 30]), np.array([0.1, 0.2, 0.3, 1.2])
    gated = joint_rank(bits[:3], res[:3])
    assert gated(np.array([20]), np.array([0.5]))[0] == 1.0  # beyond every verifiable copy


@pytest.mark.slow
def test_find_duplicates_keeps_near_flat_images_and_finds_the_copies():
    """60 textures, 20 distinct near-flat images, 12 copies of textures (every kind): without the
    gate the calibration is unreliable and keeps everything; with it, the flat images are kept as
    unverifiable and the copies are removed."""
    textures = [jpeg(texture(s)) for s in range(60)]
    flats = [jpeg(near_flat(s)) for s in range(20)]
    rng = np.random.default_rng(3)
    kinds = ("jpeg", "resize", "crop", "flip", "rot90", "colour")
    copies = [synthetic_copy(Image.open(io.BytesIO(textures[k])).convert("RGB"), kinds[k % 6], rng) for k in range(12)]
    pool = textures + flats + copies
    sig = image_signatures(pool)

    def load(rows):
        return [pool[r] for r in rows]

    found = find_duplicates(None, {"seed": 0}, signatures=sig, load=load)
    removed = np.flatnonzero(found.kind > 0)
    assert found.calibration["reliable"] and found.calibration["unverifiable"] > 0
    assert set(removed.tolist()) <= set(range(80, 92)) and len(removed) >= 10  # only copies, nearly all
    assert (found.kept_of[removed] == removed - 80).all()  # each with its own source
    ungated = find_duplicates(None, {"seed": 0, "copies": {"detail_levels": [0]}}, signatures=sig, load=load)
    assert not ungated.calibration["reliable"] and not (ungated.kind > 0).any()


def test_report_says_how_many_images_were_too_plain_to_verify():
    from pipeline.report.html import copy_detection_sentence

    record = {"calibrated": True, "reliable": True, "sample": 1000, "recall_estimate": 0.8, "unverifiable": 96}
    assert "96 near-flat images were too plain to verify" in copy_detection_sentence(record)
    assert "too plain" not in copy_detection_sentence({**record, "unverifiable": 0})


def _crop_pairs(keeps: tuple[float, ...], per_keep: int, seed: int = 1) -> np.ndarray:
    """(2 P, GRID, GRID) grids: each picture then its crop (keeping ``keep`` of each side, random offset)."""
    rng = np.random.default_rng(seed)
    grids = []
    for keep in keeps:
        for s in range(per_keep):
            im = texture(s, 256)
            w = round(256 * keep)
            ox, oy = rng.integers(0, 256 - w + 1, 2)
            grids += [grey_grid(im), grey_grid(im.crop((ox, oy, ox + w, oy + w)))]
    return np.array(grids)


def test_finer_crop_scales_register_crops_between_the_coarse_ones():
    grids = _crop_pairs((0.97, 0.95, 0.93, 0.91), 8)
    i = np.arange(0, len(grids), 2)
    _, coarse = copy_scores(d4_phash(grids), grids, i, i + 1, scales=(1.0, 0.95, 0.9))
    _, fine = copy_scores(d4_phash(grids), grids, i, i + 1, scales=(1.0, 0.97, 0.94, 0.92, 0.9))
    assert fine.mean() < 0.8 * coarse.mean()


def test_calibration_retries_a_finer_registration_when_crops_are_missed(monkeypatch):
    """The rule, on a pool where the real calibration is replaced by estimates with a known answer:
    the first crop grid recalls crops below ``retry_crop_recall``, so the next one is calibrated
    too and kept when its estimated recall is higher; an unreliable retry keeps the first."""
    import pipeline.dedup.calibration as calibration

    real = calibration.gated_threshold
    images = [jpeg(texture(s, 96)) for s in range(30)]
    sig = image_signatures(images)

    def run(outcomes: list[tuple[bool, float, bool]]) -> dict:
        calls = iter(outcomes)

        def fake(copy_bits, *args, **kwargs):
            est, score, ok, copy_score = real(copy_bits, *args, **kwargs)
            reliable, recall, crops_found = next(calls)
            crop = np.arange(len(copy_score)) % 6 == 2  # the calibration's kinds cycle, crop third
            copy_score = np.where(crop & (not crops_found), np.inf, copy_score)
            return {**est, "reliable": reliable, "recall_estimate": recall}, score, ok, copy_score

        monkeypatch.setattr(calibration, "gated_threshold", fake)
        cfg = {"seed": 0, "copies": {"crop_scales": [[1.0, 0.95, 0.9], [1.0, 0.97, 0.94, 0.92, 0.9]]}}
        return find_duplicates(None, cfg, signatures=sig, load=lambda rows: [images[r] for r in rows]).calibration

    assert run([(True, 0.8, False), (True, 0.95, True)])["crop_scales"] == [1.0, 0.97, 0.94, 0.92, 0.9]
    assert run([(True, 0.8, False), (False, 0.0, True)])["crop_scales"] == [1.0, 0.95, 0.9]
    assert run([(True, 0.95, True)])["crop_scales"] == [1.0, 0.95, 0.9]  # crops recalled: no retry
