"""Encoded image bytes <-> uint8 RGB arrays (PNG/JPEG), as used by the satellite stages."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

_MAGIC = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpeg"}


def sniff_format(data: bytes) -> str | None:
    """``"png"`` / ``"jpeg"`` from the magic bytes, else None."""
    for magic, fmt in _MAGIC.items():
        if data[: len(magic)] == magic:
            return fmt
    return None


def decode_rgb_array(data: bytes) -> np.ndarray:
    """Decode fully (truncated input raises ``OSError``) to an ``(H, W, 3)`` uint8 array."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


def encode_array(rgb: np.ndarray, fmt: str, quality: int) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG or JPEG bytes (``quality``: JPEG only)."""
    fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"image format must be png or jpeg, got {fmt!r}")
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if fmt == "jpeg" else {"compress_level": 1}
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format=fmt.upper(), **kwargs)
    return buf.getvalue()
