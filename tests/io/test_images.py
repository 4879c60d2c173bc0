import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.io.images import RejectedImage, decode_rgb, thumbnail_jpeg, to_rgb
from tests.io.bad_inputs import bad_inputs


@pytest.fixture(scope="module")
def real_jpeg(datasets_dir):
    return pq.read_table(datasets_dir / "ucmerced" / "part-00000.parquet", columns=["image"]).column("image")[0].as_py()


def _reference_rgb(name: str, data: bytes, real_jpeg: bytes) -> np.ndarray:
    """The RGB pixels a converted input must decode to, computed with numpy from its raw channels."""
    img = Image.open(io.BytesIO(data))
    raw = np.asarray(img).astype(np.int64)
    if name == "rgba.png":  # opaque: the RGB channels as saved
        return np.asarray(Image.open(io.BytesIO(real_jpeg)).convert("RGB")).astype(np.int64)
    if name == "grayscale.png":
        return np.repeat(raw[..., None], 3, axis=2)
    if name == "sixteen_bit.png":  # 16-bit gray scaled by 2**-8 onto 8 bits
        return np.repeat((raw >> 8)[..., None], 3, axis=2)
    if name == "palette.gif":
        return np.asarray(img.getpalette(), dtype=np.int64).reshape(-1, 3)[raw]
    if name == "cmyk.jpg":  # R = (255 - C)(255 - K) / 255
        return np.rint((255 - raw[..., :3]) * (255 - raw[..., 3:]) / 255).astype(np.int64)
    raise KeyError(name)


def test_bad_inputs_are_converted_or_rejected_with_reason(real_jpeg):
    for name, (data, expected) in bad_inputs(real_jpeg).items():
        if expected is None:
            img = decode_rgb(data, max_pixels=1_000_000)
            assert img.mode == "RGB", name
            np.testing.assert_array_equal(np.asarray(img), _reference_rgb(name, data, real_jpeg), err_msg=name)
        else:
            with pytest.raises(RejectedImage) as err:
                decode_rgb(data, max_pixels=1_000_000)
            assert err.value.reason.startswith(expected), (name, err.value.reason)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 0
    rgb = np.asarray(to_rgb(Image.fromarray(arr)))
    assert rgb[1, 1].tolist() == [255, 255, 255] and rgb[0, 0].tolist() == [0, 0, 0]


def test_draft_decodes_large_jpeg_at_reduced_scale(real_jpeg):
    big = Image.open(io.BytesIO(real_jpeg)).convert("RGB").resize((2048, 2048))
    buf = io.BytesIO()
    big.save(buf, format="JPEG")
    img = decode_rgb(buf.getvalue(), draft_size=224)
    assert 224 <= min(img.size) < 2048


def test_thumbnail_bounds_longest_side(real_jpeg):
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(real_jpeg, max_side=64)))
    assert max(thumb.size) == 64 and thumb.format == "JPEG"
