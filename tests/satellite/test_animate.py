"""Animations per location: one frame per date in date order, the date drawn on each, GIF and MP4."""

from __future__ import annotations

import glob
import os
import stat

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.satellite import animate
from pipeline.satellite.animate import animate_locations, check_encoder, label_frame
from pipeline.satellite.codec import encode_array


def _rows(real_images, dates, locations=("A/z8/y0_x0", "B/z8/y0_x64")):
    rows = {"location": [], "date": [], "image": []}
    for j, loc in enumerate(locations):
        for k, date in enumerate(reversed(dates)):  # stored out of order on purpose
            rows["location"].append(loc)
            rows["date"].append(date)
            rows["image"].append(encode_array(real_images[(j * 5 + k) % len(real_images)][:96, :128], "png", 95))
    return pa.table(rows)


def test_label_frame_writes_the_date_in_the_corner(real_images):
    rgb = real_images[0]
    labeled = label_frame(rgb, "2021-05-02")
    differs = np.any(labeled != rgb, axis=-1)
    assert differs[:16, :70].mean() > 0.5 and not differs[20:].any()
    assert (labeled[:16, :70].min(axis=-1) >= 200).sum() >= 20  # white (antialiased) glyph pixels
    other = label_frame(rgb, "2021-05-03")
    assert np.any(other[:16] != labeled[:16])  # a different date draws different text


def test_gif_one_per_location_frames_in_date_order(real_images, tmp_path):
    dates = ["2021-05-01", "2021-05-02", "2021-05-03", "2021-05-04"]
    table = _rows(real_images, dates)
    paths = animate_locations(table, str(tmp_path), "gif", fps=4, label=True)
    assert sorted(paths) == ["A/z8/y0_x0", "B/z8/y0_x64"]
    assert os.path.basename(paths["A/z8/y0_x0"]) == "A_z8_y0_x0.gif"
    with Image.open(paths["A/z8/y0_x0"]) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(dates) and gif.size == (128, 96)
        assert gif.info["duration"] == 250
        frames = []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.int16))
    # frame k is the image of dates[k] (table rows were reversed), labeled: compare below the label
    by_date = {
        d: r["image"]
        for d, r in zip(table.column("date").to_pylist(), table.to_pylist())
        if r["location"] == "A/z8/y0_x0"
    }
    for k, date in enumerate(dates):
        truth = np.asarray(Image.open(__import__("io").BytesIO(by_date[date])).convert("RGB"), dtype=np.int16)
        assert np.abs(frames[k][20:] - truth[20:]).mean() < 12  # GIF palette error only
        assert np.abs(frames[k][:14, :60] - truth[:14, :60]).mean() > 30  # the label is there


def test_unlabeled_frames_and_bad_settings(real_images, tmp_path):
    table = _rows(real_images, ["2021-01-01", "2021-01-02"], locations=("L",))
    path = animate_locations(table, str(tmp_path), "gif", fps=2, label=False)["L"]
    with Image.open(path) as gif:
        frame = np.asarray(gif.convert("RGB"), dtype=np.int16)
    truth = np.asarray(Image.open(__import__("io").BytesIO(table.column("image")[1].as_py())).convert("RGB"))
    assert np.abs(frame[:14, :60] - truth[:14, :60]).mean() < 12
    with pytest.raises(ValueError, match="choose gif or mp4"):
        check_encoder("avi")
    with pytest.raises(ValueError, match="fps"):
        animate_locations(table, str(tmp_path), "gif", fps=0, label=True)


def test_mp4_without_an_encoder_fails_before_work(monkeypatch, real_images, tmp_path):
    monkeypatch.setattr(animate, "ffmpeg_executable", lambda: None)
    with pytest.raises(ValueError, match="animate=mp4 needs an ffmpeg encoder") as err:
        animate_locations(_rows(real_images, ["2021-01-01"]), str(tmp_path / "out"), "mp4", fps=2, label=True)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


def test_mp4_pipes_raw_frames_to_ffmpeg(monkeypatch, real_images, tmp_path):
    """A stand-in ffmpeg records its arguments and the bytes it reads (no encoder is installed here)."""
    fake = tmp_path / "ffmpeg"
    fake.write_text('#!/bin/sh\nfor a; do last="$a"; done\necho "$@" > "$last.args"\nwc -c > "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(animate, "ffmpeg_executable", lambda: str(fake))
    dates = ["2021-01-01", "2021-01-02", "2021-01-03"]
    path = animate_locations(_rows(real_images, dates, ("L",)), str(tmp_path / "out"), "mp4", fps=3, label=True)["L"]
    assert int(open(path).read()) == len(dates) * 96 * 128 * 3
    (args_file,) = glob.glob(f"{path}.tmp-*.mp4.args")  # the encoder wrote the temporary (atomic_path)
    args = open(args_file).read().split()
    assert args[args.index("-s") + 1] == "128x96" and float(args[args.index("-r") + 1]) == 3 and "libx264" in args
