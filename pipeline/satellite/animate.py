"""Animations of each downloaded location over its dates, the date written on every frame.

GIF with Pillow; MP4 (H.264) through an ``ffmpeg`` executable (``imageio-ffmpeg``'s bundled one, or
one on ``PATH``) fed raw RGB frames on stdin. :func:`check_encoder` fails in one line before any work
when the chosen format has no encoder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_path
from pipeline.satellite.codec import decode_rgb_array

FORMATS = ("gif", "mp4")


def ffmpeg_executable() -> str | None:
    """Path of an ffmpeg binary: imageio-ffmpeg's when installed, else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def check_encoder(fmt: str) -> None:
    """Raise ``ValueError`` (one line) when ``fmt`` is unknown or has no encoder here."""
    if fmt not in FORMATS:
        raise ValueError(f"animate={fmt}: choose gif or mp4")
    if fmt == "mp4" and ffmpeg_executable() is None:
        raise ValueError(
            "animate=mp4 needs an ffmpeg encoder: `pip install imageio-ffmpeg` (or ffmpeg on PATH), or use animate=gif"
        )


def label_frame(rgb: np.ndarray, text: str) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with ``text`` in white on a black box in the top-left corner."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox((4, 3), text, font=font)
    draw.rectangle((x0 - 3, y0 - 2, x1 + 3, y1 + 2), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def write_gif(frames: Sequence[np.ndarray], path: str, fps: float) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)


def write_mp4(frames: Sequence[np.ndarray], path: str, fps: float, ffmpeg: str | None = None) -> None:
    """H.264 MP4 via ffmpeg reading ``rawvideo`` rgb24 frames (even sizes: yuv420p needs them)."""
    exe = ffmpeg or ffmpeg_executable()
    if exe is None:
        check_encoder("mp4")
    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    cmd = [
        exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w2}x{h2}",
        "-r", str(fps), "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", path,
    ]  # fmt: skip
    data = b"".join(np.ascontiguousarray(f[:h2, :w2]).tobytes() for f in frames)
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-300:]}")


def animate_locations(table: pa.Table, output: str, fmt: str, *, fps: float, label: bool) -> dict[str, str]:
    """One animation per ``location`` of the downloader's rows (``location``, ``date``, ``image``),
    frames in date order; returns ``{location: path}``. Files are ``<output>/<location with / -> _>.<fmt>``."""
    check_encoder(fmt)
    if fps <= 0:
        raise ValueError(f"animation.fps must be > 0, got {fps}")
    os.makedirs(output, exist_ok=True)
    locations = table.column("location").cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    dates = table.column("date").cast(pa.string()).to_numpy(zero_copy_only=False).astype(str)
    images = table.column("image")
    order = np.lexsort((dates, locations))
    starts = np.flatnonzero(np.r_[True, locations[order][1:] != locations[order][:-1]])
    written: dict[str, str] = {}
    for group in np.split(order, starts[1:]) if len(order) else []:
        frames = []
        for i in group:
            rgb = decode_rgb_array(images[int(i)].as_py())
            frames.append(label_frame(rgb, dates[i]) if label else rgb)
        location = str(locations[group[0]])
        path = os.path.join(output, f"{location.replace('/', '_')}.{fmt}")
        with atomic_path(path, suffix=f".{fmt}") as tmp:  # the encoders pick the container by extension
            (write_gif if fmt == "gif" else write_mp4)(frames, tmp, fps)
        written[location] = path
    return written
