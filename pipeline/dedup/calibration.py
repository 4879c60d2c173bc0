"""Per-collection calibration of the copy decision from synthetic copies of the pool's own images.

A fixed threshold does not transfer: how close distinct images of a collection come depends on the
collection (texture, size, grey or colour; small grey digits are 2-4 pHash bits apart). So the step
makes copies of a seeded sample of the pool's images with every transform it promises to find
(:data:`KINDS`), measures their verification residual to their source
(:func:`pipeline.dedup.copies.copy_scores`), and sets the threshold from two distributions:

- ``C(t)``: share of synthetic copies at residual ``<= t`` (estimated copy recall);
- ``R(t)``: number of pool images removed when pairs at ``<= t`` are copies (grouped as the step
  groups them, :func:`pipeline.dedup.grouping.keeper_groups`: each removed image is verified against
  the image kept in its place, as a synthetic copy is against its source).

``R(t)`` counts the pool's real copies too. Up to the synthetic copies' 90th-percentile score
``t_90`` few distinct pairs were seen on the collections measured, so the pool's copies are
estimated as ``m = R(t_90) / C(t_90)`` (``C(t_90)`` = 0.9: relative error ~ sqrt(0.1 / (0.9
sample)), 1% for 1,000; copies harder than the synthetic ones make ``m`` low, which errs towards
keeping) and the share of distinct images removed at ``t`` from the excess over them above
``t_90`` (so the error of ``m`` enters only times ``C(t) - C(t_90) <= 0.1``):

    F(t) = max(0, R(t) - R(t_90) - m (C(t) - C(t_90))) / (N - m),    t_q = q-quantile of copies

over the recall levels ``q`` of ``recall_levels`` (from 0.9 up), tried in order: ``t*`` is the last
level before the first whose excess is significantly above ``alpha`` (more than
``alpha D + 2 sqrt(alpha D)`` images, ``D = N - m``: on a pool of 300 one pair is already 0.7%). The threshold is always a recall the collection's own
copies reach, never an absolute residual. ``F(t_90) = 0`` by construction, so when the very next
level already fails, distinct images reach into the copies' range and the collection is unreliable. Counting removals, not images with a close
neighbour, keeps ``m`` right when an image has many copies (a source with six copies is near one
of them far more often than one copy is near its source). When even the strictest level removes
more than ``alpha`` of the distinct images, the collection is declared unreliable
(``reliable: false`` in run.json and the report) and its near-duplicates are kept. ``m`` is only
as good as ``C(t_ref)`` from the sample (binomial error ~ sqrt(0.25 / sample)), hence a large
default sample.

**Detail gate.** A near-flat image (sky, blurred background, a blank page) has too little picture
for any grid signal to tell its copies from other near-flat images: codec noise is as large as its
structure. When no level holds on the whole pool, the calibration is repeated on the images whose
:func:`grid_detail` is at least the ``q``-quantile of the pool's, ``q`` over ``detail_levels`` in
order (:func:`gated_threshold`): the first reliable ``q`` wins; the images below its cut are
*unverifiable* (counted in the record) and kept, never removed nor kept in a copy's place. The cut
is a quantile of this collection's own detail, not an absolute level. A level whose calibration
looks reliable can still be wrong in one way the excess ``F`` cannot see: distinct near-flat pairs
below ``t_90`` are counted into ``m`` as copies. Real copies of random pool images are as detailed
as the synthetic ones found at ``t_90``; so when the pairs removed at ``t_90`` are significantly
plainer (:func:`detail_shift`), the level fails too.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

REFERENCE_RECALL = 0.9  # t_ref: this quantile of the synthetic copies' scores
DETAIL_Z = (
    2.5  # detail gate: removals at t_ref plainer than the found synthetic copies by more than this z fail a level
)


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _jpeg_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(img, int(rng.integers(20, 76)))


def _resize_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = img.size
    f = rng.uniform(0.3, 0.9)
    return _jpeg(img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BICUBIC), 90)


def _crop_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    w, h = img.size
    cw, ch = round(w * rng.uniform(0.9, 0.99)), round(h * rng.uniform(0.9, 0.99))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return _jpeg(img.crop((x, y, x + cw, y + ch)), 90)


def _flip_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(ImageOps.mirror(img) if rng.random() < 0.5 else ImageOps.flip(img), 90)


def _rot90_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    return _jpeg(img.rotate(90 * int(rng.integers(1, 4)), expand=True), 90)


def _colour_copy(img: Image.Image, rng: np.random.Generator) -> bytes:
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.25))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
    return _jpeg(img, 90)


# copy kind -> (RGB image, rng) -> the copy as a JPEG file (re-encoded at quality 90 unless the kind is jpeg)
COPY_KINDS: dict[str, Callable[[Image.Image, np.random.Generator], bytes]] = {
    "jpeg": _jpeg_copy,
    "resize": _resize_copy,
    "crop": _crop_copy,
    "flip": _flip_copy,
    "rot90": _rot90_copy,
    "colour": _colour_copy,
}
KINDS = tuple(COPY_KINDS)


def synthetic_copy(img: Image.Image, kind: str, rng: np.random.Generator) -> bytes:
    """A copy of RGB ``img`` as a JPEG file, over the ranges the step promises to find (README):
    ``jpeg`` (quality 20-75), ``resize`` (30-90% of the side), ``crop`` (90-99% of each side at a
    random offset), ``flip`` (left-right or up-down), ``rot90`` (90, 180 or 270 degrees), ``colour``
    (brightness 0.6-1.4, contrast 0.8-1.25, saturation 0.5-1.5)."""
    if kind not in COPY_KINDS:
        raise ValueError(f"unknown copy kind {kind!r}; known: {KINDS}")
    return COPY_KINDS[kind](img, rng)


def joint_rank(copy_bits: np.ndarray, copy_residual: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The pair score ``s = max(F_bits(bits), F_res(residual))``, ``F_x(v)`` = share of the synthetic
    copies strictly closer than ``v`` in signal ``x``: each signal on the scale of this collection's
    own copies, and a pair must look like a copy in both. pHash bits are the sharp signal on
    textured photos (a JPEG'd aerial scene moves few bits, its residual moves more), the residual
    on small grey objects (distinct digits lie 2-6 bits apart); the max lets each veto."""
    cb, cr = np.sort(np.asarray(copy_bits, np.float64)), np.sort(np.asarray(copy_residual, np.float64))

    def score(bits: np.ndarray, residual: np.ndarray) -> np.ndarray:
        fb = np.searchsorted(cb, np.asarray(bits, np.float64), "left") / max(len(cb), 1)
        fr = np.searchsorted(cr, np.asarray(residual, np.float64), "left") / max(len(cr), 1)
        return np.maximum(fb, fr)

    return score


def grid_detail(grids: np.ndarray) -> np.ndarray:
    """(N,) float64 standard deviation of each (N, GRID, GRID) grey grid, in grey levels: how much
    picture a copy can be verified against (JPEG noise is a few levels)."""
    return np.asarray(grids, np.float64).reshape(len(grids), -1).std(axis=1)


def detail_shift(removed_detail: np.ndarray, found_detail: np.ndarray) -> float:
    """z-score of the mean rank of ``removed_detail`` among ``found_detail`` (low: the removed pairs
    are plainer than the synthetic copies found at the same threshold):

        u_k = F_found(d_k),   z = (mean_k u_k - 1/2) / sqrt(1 / (12 K))

    (u_k uniform when the removed pairs are copies like the synthetic ones; 0 when K = 0)."""
    found = np.sort(np.asarray(found_detail, np.float64))
    k = len(removed_detail)
    if not k or not len(found):
        return 0.0
    u = (np.searchsorted(found, removed_detail, "left") + np.searchsorted(found, removed_detail, "right")) / (
        2 * len(found)
    )
    return float((u.mean() - 0.5) / math.sqrt(1 / (12 * k)))


def gated_threshold(
    copy_bits: np.ndarray,
    copy_residual: np.ndarray,
    copy_detail: np.ndarray,
    pool_detail: np.ndarray,
    grouped: Callable[[float, Callable[[np.ndarray, np.ndarray], np.ndarray], np.ndarray], np.ndarray],
    *,
    detail_levels: list[float],
    recall_levels: list[float],
    max_false_match: float,
) -> tuple[dict, Callable[[np.ndarray, np.ndarray], np.ndarray], np.ndarray, np.ndarray]:
    """:func:`choose_threshold` behind the detail gate of the module doc.

    A level ``q`` is accepted when its calibration is reliable and the images removed at ``t_ref``
    are not significantly plainer than the synthetic copies found there (:func:`detail_shift` >=
    ``-DETAIL_Z``; ``m`` counts them as copies, so near-flat distinct images below ``t_ref``
    would pass as copies unseen otherwise).

    Args:
        copy_bits, copy_residual: (m,) scores of each synthetic copy to its source.
        copy_detail: (m,) ``min(detail(source), detail(copy))``: a pair is verifiable when both are.
        pool_detail: (N,) :func:`grid_detail` of the pool's images.
        grouped: ``(t, score, verifiable) -> kept_of (N,)``: the pool's groups at threshold ``t``
            when pairs of verifiable images are scored by ``score(bits, residual)``.

    Returns:
        (record: :func:`choose_threshold`'s, plus ``detail_level`` q, ``detail_cut``, ``detail_z``,
        ``unverifiable`` images; ``recall_estimate`` is over all synthetic copies, the unverifiable
        ones counted as missed), pair score, verifiable (N,) bool, copy score (m,) (inf for
        unverifiable copies).
    """
    n = len(pool_detail)
    rows = np.arange(n)
    for q in detail_levels:
        cut = float(np.quantile(pool_detail, q)) if q > 0 else -np.inf
        ok, verifiable = copy_detail >= cut, pool_detail >= cut
        if not ok.any():
            break
        score = joint_rank(copy_bits[ok], copy_residual[ok])
        copy_score = score(copy_bits[ok], copy_residual[ok])
        est = choose_threshold(
            copy_score,
            lambda t: int((grouped(t, score, verifiable) != rows).sum()),  # noqa: B023 (used in this iteration)
            int(verifiable.sum()),
            recall_levels=recall_levels,
            max_false_match=max_false_match,
        )
        top = float(np.quantile(copy_score, REFERENCE_RECALL, method="inverted_cdf"))
        kept_of = grouped(top, score, verifiable)
        gone = np.flatnonzero(kept_of != rows)
        z = detail_shift(np.minimum(pool_detail[gone], pool_detail[kept_of[gone]]), copy_detail[ok][copy_score <= top])
        if est["reliable"] and z >= -DETAIL_Z:
            break
    copy_score = np.where(ok, score(copy_bits, copy_residual), np.inf)
    record = {
        **est,
        "recall_estimate": round(est["recall_estimate"] * float(ok.mean()), 4) if len(ok) else 0.0,
        "copy_share": round(est["copy_share"] * int(verifiable.sum()) / max(n, 1), 4),
        "detail_level": float(q),
        "detail_cut": round(cut, 3) if np.isfinite(cut) else None,
        "detail_z": round(z, 2),
        "unverifiable": int(n - verifiable.sum()),
    }
    if est["reliable"] and z < -DETAIL_Z:  # no level passed the detail test
        record.update(threshold=None, reliable=False, recall_estimate=0.0)
    return record, score, verifiable, copy_score


def choose_threshold(
    copy_score: np.ndarray,
    removed: Callable[[float], int],
    n: int,
    *,
    recall_levels: list[float],
    max_false_match: float,
) -> dict:
    """The threshold ``t*`` of the module doc and the estimates behind it.

    Args:
        copy_score: (m,) residual of each synthetic copy to its source.
        removed: ``R(t)``, pool images removed at threshold ``t``.
        n: pool size N.

    Returns:
        ``threshold`` (None when unreliable), ``reliable``, ``recall_estimate`` = C(t*),
        ``false_match_rate`` = F(t*) (at the strictest level when unreliable), ``copy_share`` = m/N.
    """
    copy_score = np.sort(np.asarray(copy_score, np.float64))
    n = max(int(n), 1)
    if not len(copy_score):
        return {
            "threshold": None,
            "reliable": False,
            "recall_estimate": 0.0,
            "false_match_rate": None,
            "copy_share": 0.0,
        }

    def recall(t: float) -> float:
        return float(np.searchsorted(copy_score, t, "right")) / len(copy_score)

    top = float(np.quantile(copy_score, REFERENCE_RECALL, method="inverted_cdf"))
    copies = min(float(removed(top)) / max(recall(top), 1e-9), n)

    def false_match(t: float) -> float:  # counted from the top reference: m's error enters times C(t) - C(top) only
        excess = float(removed(t)) - removed(top) - copies * (recall(t) - recall(top))
        return max(0.0, excess) / max(n - copies, 1.0)

    steps = sorted({float(np.quantile(copy_score, float(q), method="inverted_cdf")) for q in recall_levels})
    rates = {t: false_match(t) for t in steps}
    distinct = max(n - copies, 1.0)
    allowed = max_false_match * distinct + 2 * math.sqrt(max_false_match * distinct)  # Poisson: 300 images allow 3.9
    fails = [k for k, t in enumerate(steps) if rates[t] * distinct > allowed]
    first_fail = fails[0] if fails else len(steps)
    # F(t_90) is 0 by construction; distinct images already removed right above it reach below it too
    threshold = steps[first_fail - 1] if first_fail >= 2 or (first_fail == 1 and len(steps) == 1) else None
    at = threshold if threshold is not None else steps[min(first_fail, len(steps) - 1)]
    return {
        "threshold": threshold,
        "reliable": threshold is not None,
        "recall_estimate": round(recall(at), 4) if threshold is not None else 0.0,
        "false_match_rate": round(rates[at], 5),
        "copy_share": round(copies / n, 4),
    }
