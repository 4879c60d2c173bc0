"""The input-format registry: every format found by name and suffix, a new format is one registration."""

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.io.formats import FORMATS, InputFormat, format_of_file, input_format, register, registry
from pipeline.io.sources import InputConfig, detect_format, iter_images


def test_the_shipped_formats_are_registered_by_name_and_suffix():
    assert {"folder", "parquet", "tar", "embeddings"} <= set(registry())
    assert [format_of_file(p) for p in ("a.parquet", "b.tar.gz", "c.npy", "d.jpg")] == [
        "parquet",
        "tar",
        "embeddings",
        "folder",
    ]
    with pytest.raises(ValueError, match="unknown input.format 'hdf5': use auto, embeddings, folder, parquet, tar"):
        input_format("hdf5")


def test_a_new_format_is_one_registration(tmp_path):
    """A stand-in ``.npz`` format (one unit per file, one row per array) read through the ordinary reader."""
    arrays = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "stack.npz", images=arrays)

    def list_units(cfg, path):
        return [{"kind": "npz", "file": path, "root": str(tmp_path), "rows": "", "names": None, "offset": 0}]

    def expand(cfg, unit):
        pngs = []
        for a in np.load(unit["file"])["images"]:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        ids = [f"stack#{i}" for i in range(len(pngs))]
        return pa.table({"id": ids, "uri": ids, "image": pa.array(pngs, pa.binary()), "_read_error": [None] * 3})

    register(InputFormat("npz", (".npz",), list_units, expand))
    try:
        path = str(tmp_path / "stack.npz")
        assert detect_format(path) == "npz"
        rows = pa.concat_tables(iter_images(InputConfig.from_dict({"path": path})))
        assert rows.column("id").to_pylist() == ["stack#0", "stack#1", "stack#2"]
        decoded = np.asarray(Image.open(io.BytesIO(rows.column("image")[1].as_py())))
        np.testing.assert_array_equal(decoded, arrays[1])
    finally:
        FORMATS.pop("npz")
