"""Real images from ../shared/datasets turned into every kind of bad input the readers must handle."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def bad_inputs(jpeg: bytes) -> dict[str, tuple[bytes, str | None]]:
    """name -> (bytes, expected reject-reason prefix or None when it must be converted and kept)."""
    rgb = Image.open(io.BytesIO(jpeg)).convert("RGB")
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return {
        "grayscale.png": (_save(rgb.convert("L"), "PNG"), None),
        "rgba.png": (_save(rgb.convert("RGBA"), "PNG"), None),
        "palette.gif": (_save(rgb.convert("P"), "GIF"), None),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG"), None),
        "sixteen_bit.png": (_save(Image.fromarray(arr16), "PNG"), None),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "corrupt or truncated"),
        "empty.jpg": (b"", "empty file"),
        "notes.txt": (b"this is not an image\n", "not an image"),
        "huge.png": (_save(rgb.resize((1200, 1000)), "PNG"), "too large"),
    }
