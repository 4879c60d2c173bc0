"""Batched verification (``copy_scores``) gives the scores of the per-pair reference it replaced."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.dedup.copies import GRID, block_residual, copy_scores, standardised
from pipeline.dedup.perceptual import CROP_SCALES, d4, d4_phash, hamming, phash_bits, unit_rows, window_grid


def reference_windows(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One grid's windows, one PIL resize and one sliding view at a time (the former code)."""
    units, boxes = [], []
    sides = [int(round(GRID / s)) for s in CROP_SCALES]
    for sx in sides:
        for sy in sides:
            up = (
                grid
                if sx == sy == GRID
                else np.asarray(Image.fromarray(grid).resize((sx, sy), Image.Resampling.BILINEAR))
            )
            view = np.lib.stride_tricks.sliding_window_view(up.astype(np.float32), (GRID, GRID))
            units.append(unit_rows(view.reshape(-1, GRID * GRID)))
            oy, ox = np.divmod(np.arange(view.shape[0] * view.shape[1]), view.shape[1])
            fx, fy = GRID / sx, GRID / sy
            boxes.append(np.stack([ox * fx, oy * fy, np.full(len(ox), GRID * fx), np.full(len(ox), GRID * fy)], axis=1))
    return np.concatenate(units), np.concatenate(boxes)


def reference_scores(hashes, grids, i, j, register):
    """Per pair: direct (best symmetry by full-grid correlation) and registered (both ways) scores."""
    bits, res = np.zeros(len(i), np.int64), np.zeros(len(i), np.float32)
    for p, (a, b) in enumerate(zip(i, j)):
        views = d4(grids[a])
        g = int((standardised(views).reshape(8, -1) @ standardised(grids[b][None]).reshape(-1)).argmax())
        bits[p] = hamming(hashes[a], hashes[b, 0][None]).min()
        res[p] = block_residual(views[g][None], grids[b][None])[0]
        if not register[p]:
            continue
        best = []
        for big, small in ((a, b), (b, a)):
            unit, box = reference_windows(grids[big])
            c = unit_rows(d4(grids[small]).reshape(8, -1)) @ unit.T
            w, s = c.argmax(1), int(c.max(1).argmax())
            best.append((c[s, w[s]], big, small, box[w[s]], s))
        _, big, small, box, s = best[int(best[1][0] > best[0][0])]
        region = window_grid(grids[big], box)
        bits[p] = min(bits[p], hamming(phash_bits(region), hashes[small, s]))
        res[p] = min(res[p], block_residual(region[None], d4(grids[small])[s][None])[0])
    return bits, res


@pytest.mark.slow
def test_batched_scores_are_the_per_pair_scores():
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    smooth = np.stack(
        [
            np.asarray(Image.fromarray(g).resize((GRID, GRID), Image.Resampling.BICUBIC))
            for g in rng.integers(0, 256, (60, 10, 10), dtype=np.uint8)
        ]
    )
    digits = np.stack(
        [
            np.asarray(Image.fromarray((x * 255 / 16).astype(np.uint8)).resize((GRID, GRID)))
            for x in load_digits().images[:40]
        ]
    )
    crops = np.stack([np.asarray(Image.fromarray(g[1:30, 2:31]).resize((GRID, GRID))) for g in smooth[:20]])
    grids = np.concatenate([smooth, digits, crops, np.full((4, GRID, GRID), 128, np.uint8)])  # flat: ties
    hashes = d4_phash(grids)
    i = np.r_[rng.integers(0, len(grids), 150), np.arange(20), 120, 121]
    j = np.r_[rng.integers(0, len(grids), 150), 100 + np.arange(20), 122, 123]
    register = np.r_[rng.random(150) < 0.4, np.ones(22, bool)]
    bits, res = copy_scores(hashes, grids, i, j, register=register, chunk=37)  # several chunks
    ref_bits, ref_res = reference_scores(hashes, grids, i, j, register)
    np.testing.assert_array_equal(bits, ref_bits)
    np.testing.assert_allclose(res, ref_res, rtol=0, atol=1e-5)  # float32 sums in another order
    # windows are computed once per image, `chunk` images (and pairs) at a time: any chunking scores alike
    from pipeline.dedup.copies import _registered

    few = _registered(hashes, grids, i, j, chunk=5)  # 25 image chunks, pairs of one image split too
    whole = _registered(hashes, grids, i, j)
    np.testing.assert_array_equal(few[0], whole[0])
    np.testing.assert_allclose(few[1], whole[1], rtol=0, atol=1e-6)
