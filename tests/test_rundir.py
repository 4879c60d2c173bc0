import json

import pytest

from pipeline.rundir import RunDir, fingerprint


def test_markers_respect_config_fingerprint(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert not run.is_done("embed")
    run.mark_done("embed", {"a": 1}, kept=3)
    assert run.is_done("embed", {"a": 1}) and run.is_done("embed")
    assert not run.is_done("embed", {"a": 2})  # another config -> recompute
    assert run.marker("embed")["kept"] == 3
    run.clear("embed")
    assert not run.is_done("embed")


def test_staging_renames_only_on_success(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(RuntimeError):
        with run.staging("out") as tmp:
            (tmp_path / tmp.split("/")[-1]).mkdir()
            raise RuntimeError("crash mid-write")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []
    with run.staging("out") as tmp:
        (tmp_path / tmp.split("/")[-1]).mkdir()
        (tmp_path / tmp.split("/")[-1] / "x").write_text("done")
    assert (tmp_path / "out" / "x").read_text() == "done"


def test_run_json_merges_sections(tmp_path):
    run = RunDir(str(tmp_path))
    run.update_run_json(timings={"embed": 1.0}, seed=0)
    run.update_run_json(timings={"cluster": 2.0})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data == {"seed": 0, "timings": {"embed": 1.0, "cluster": 2.0}}


def test_fingerprint_is_order_independent():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
