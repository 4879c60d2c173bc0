"""Copy signal: a perceptual hash (``imagehash.phash``) made invariant to the 8 symmetries of the square.

pHash (Zauner 2010, as ``imagehash.phash`` computes it): grey levels resized to a ``32 x 32`` grid, 2-D DCT, the
top-left ``8 x 8`` coefficients thresholded at their median (64 bits, 32 of them set, so distances
are even). JPEG re-encoding, resizing and brightness/contrast/colour shifts move few of those bits.

D4 invariance: an image is reduced to its grey grid once, and pHash is taken of the 8 flips and
rotations of that grid (:func:`d4`, exact permutations of its pixels; resizing a grid to its own
size is the identity). The 8 hashes of a flipped or rotated copy are the 8 hashes of the original
in another order, so the copy distance

    d(a, b) = min_{g in D4} Hamming(h_g(a), h_id(b))

is 0 between an image and any of its 8 symmetric versions.

Crops move the content under the grid, and pHash bits with it (a 10% crop: ~12 of 64 bits on AID,
as many as between distinct images). :func:`pipeline.dedup.copies.copy_distances` therefore first registers the two
grids: the smaller field of view (any of the 8 orientations) is matched by normalised
cross-correlation against windows of the other grid enlarged by ``1/s`` (``s`` in
:data:`CROP_SCALES`), and pHash is then taken of the best window. The copy distance of a pair is
the smaller of the direct and the aligned distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 32  # side of the grey grid pHash reduces an image to (hash_size 8 x highfreq_factor 4)
HASH_SIZE = 8  # 64-bit hashes
HASH_BYTES = HASH_SIZE * HASH_SIZE // 8
HASH_BITS = HASH_SIZE * HASH_SIZE
DESCRIPTOR = 8  # side of the block-mean descriptor used to find crop candidates (64 floats)
CROP_SCALES = (1.0, 0.95, 0.9)  # share of the side a copy may keep; 0.9 = up to 10% cropped


def d4(a: np.ndarray) -> np.ndarray:
    """(..., s, s) -> (..., 8, s, s): identity, flip left-right, flip up-down, rot90 x1, x2, x3,
    transpose, anti-transpose (the dihedral group of the square, identity first)."""
    ax = (-2, -1)
    t = np.swapaxes(a, -1, -2)
    return np.stack(
        [a, a[..., :, ::-1], a[..., ::-1, :], np.rot90(a, 1, ax), np.rot90(a, 2, ax), np.rot90(a, 3, ax), t,
         np.rot90(t, 2, ax)],
        axis=-3,
    )  # fmt: skip


def grey_grid(img: Image.Image) -> np.ndarray:
    """(GRID, GRID) uint8: the grey grid ``imagehash.phash`` reduces ``img`` to."""
    return np.asarray(img.convert("L").resize((GRID, GRID), Image.Resampling.LANCZOS), dtype=np.uint8)


def phash_bits(grids: np.ndarray) -> np.ndarray:
    """(..., HASH_BYTES) uint8: packed pHash of (..., GRID, GRID) grey grids, bit for bit
    ``imagehash.phash(grid, 8, 4)`` (tests check it), vectorised over the leading axes:

        C = DCT-II_rows(DCT-II_cols(grid))[:8, :8],   bit_uv = C_uv > median(C)
    """
    import scipy.fft

    c = scipy.fft.dct(scipy.fft.dct(np.asarray(grids, dtype=np.float64), axis=-2), axis=-1)
    low = c[..., :HASH_SIZE, :HASH_SIZE].reshape(*c.shape[:-2], HASH_BITS)
    return np.packbits(low > np.median(low, axis=-1, keepdims=True), axis=-1)


def d4_phash(grids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(N, 8, HASH_BYTES) uint8: pHash of each symmetry of (N, GRID, GRID) grids in :func:`d4` order,
    ``chunk`` grids at a time (the DCT works in float64: ~130 kB per grid)."""
    grids = np.asarray(grids)
    if len(grids) <= chunk:
        return phash_bits(d4(grids))
    return np.concatenate([phash_bits(d4(grids[a : a + chunk])) for a in range(0, len(grids), chunk)])


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (float) centred and scaled to unit L2 norm: dot products are correlations."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def descriptors(grids: np.ndarray) -> np.ndarray:
    """(N, 8, DESCRIPTOR**2) float32: block means of each symmetry of (N, GRID, GRID) grids, centred
    and unit-norm. A crop of 10% moves the content by under one block, so a copy's source is its
    nearest neighbour by this correlation (AID: 98% of 10% crops, 100% in the top 5)."""
    b = GRID // DESCRIPTOR
    n = len(grids)
    blocks = grids.astype(np.float32).reshape(n, DESCRIPTOR, b, DESCRIPTOR, b).mean(axis=(2, 4))
    return unit_rows(d4(blocks).reshape(n, 8, DESCRIPTOR * DESCRIPTOR))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of packed uint8 codes, broadcast over leading axes."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1, dtype=np.int64)


@dataclass
class Windows:
    """The windows of grids, enlarged by ``1/sx`` across and ``1/sy`` down for each pair of crop
    scales (crops need not keep the aspect ratio): ``unit[b, r]`` is grid b's window r, centred
    and unit-norm; ``box[r]`` is window r's (x0, y0, width, height) in the grid's pixels (the same
    for every grid)."""

    unit: np.ndarray  # (B, W, GRID*GRID) float32
    box: np.ndarray  # (W, 4) float64


def window_count(scales: tuple[float, ...] = CROP_SCALES) -> int:
    """Windows per grid for crop ``scales``: (sum over scales of (side - GRID + 1))^2."""
    return sum(int(round(GRID / s)) - GRID + 1 for s in scales) ** 2


def windows(grids: np.ndarray, scales: tuple[float, ...] = CROP_SCALES) -> Windows:
    """:class:`Windows` of (B, GRID, GRID) uint8 grids at crop ``scales`` (the enlargements are PIL's
    bilinear resize of each)."""
    units, boxes = [], []
    sides = [int(round(GRID / s)) for s in scales]
    b = len(grids)
    for sx in sides:
        for sy in sides:
            up = (
                grids
                if sx == sy == GRID
                else np.stack(
                    [np.asarray(Image.fromarray(g).resize((sx, sy), Image.Resampling.BILINEAR)) for g in grids]
                )
            )
            view = np.lib.stride_tricks.sliding_window_view(up.astype(np.float32), (GRID, GRID), axis=(1, 2))
            units.append(unit_rows(view.reshape(b, -1, GRID * GRID)))
            oy, ox = np.divmod(np.arange(view.shape[1] * view.shape[2]), view.shape[2])
            fx, fy = GRID / sx, GRID / sy  # window pixels -> grid pixels
            boxes.append(np.stack([ox * fx, oy * fy, np.full(len(ox), GRID * fx), np.full(len(ox), GRID * fy)], axis=1))
    return Windows(np.concatenate(units, axis=1), np.concatenate(boxes))


def window_grid(grid: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(GRID, GRID) uint8: the window ``box`` = (x0, y0, width, height) of ``grid`` resampled to a grid."""
    x0, y0, w, h = (float(v) for v in box)
    region = Image.fromarray(grid).resize((GRID, GRID), Image.Resampling.LANCZOS, box=(x0, y0, x0 + w, y0 + h))
    return np.asarray(region)
