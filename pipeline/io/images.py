"""Decoding of untrusted image bytes into RGB, with a recorded reason for every rejection.

Convertible inputs become 8-bit RGB: grayscale, palette, RGBA/LA (alpha dropped), CMYK, 16-bit and
float images (scaled to 0..255 by their type's range). Rejected: empty files, non-images, corrupt or
truncated files, and images above ``max_pixels`` (checked from the header, before decoding).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 178_956_970  # PIL's own decompression-bomb limit (2x its warning threshold)

# PIL raises its bomb error itself at 2x MAX_IMAGE_PIXELS; we check sizes explicitly instead.
Image.MAX_IMAGE_PIXELS = None


class RejectedImage(ValueError):
    """An input that cannot be turned into an RGB image; ``reason`` goes to ``rejects.parquet``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_rgb(
    data: bytes | None, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int | None = None
) -> Image.Image:
    """Decode ``data`` into an RGB ``PIL.Image`` or raise :class:`RejectedImage`.

    ``draft_size`` lets JPEG decode at a reduced scale (>= draft_size on each side), which makes
    very large JPEGs cheap when the caller resizes anyway.
    """
    if not data:
        raise RejectedImage("empty file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not an image") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is a property of the input
        raise RejectedImage(f"unreadable: {type(exc).__name__}: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise RejectedImage(f"invalid size {width}x{height}")
    if max_pixels and width * height > max_pixels:
        raise RejectedImage(f"too large: {width}x{height} > {max_pixels} pixels")
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    try:
        img.load()
    except Exception as exc:  # noqa: BLE001
        raise RejectedImage(f"corrupt or truncated: {exc}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (high bit depths scaled by their range)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            arr8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        else:
            arr = arr.astype(np.float64)
            lo, hi = (
                (0.0, 65535.0) if img.mode == "I" and arr.min() >= 0 and arr.max() <= 65535 else (arr.min(), arr.max())
            )
            if img.mode == "F" and lo >= 0 and hi <= 1:
                lo, hi = 0.0, 1.0
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            arr8 = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.convert("RGB")


def thumbnail_jpeg(data: bytes, max_side: int = 256, quality: int = 85) -> bytes:
    """Re-encode ``data`` as a JPEG whose longer side is at most ``max_side`` pixels."""
    img = decode_rgb(data, draft_size=max_side)
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def pixel_digest(img: Image.Image) -> str:
    """blake2b-128 hex of ``WxH`` and the RGB pixel bytes: equal for pixel-identical images,
    whatever their container (PNG vs lossless re-save, stripped metadata)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.width}x{img.height}".encode())
    h.update(img.tobytes())
    return h.hexdigest()
