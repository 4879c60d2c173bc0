"""Partial outputs are never mistaken for finished ones: staged names, markers written last."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.rundir import RunDir
from pipeline.sampling.run import run_sample
from tests.cluster.conftest import REPO
from tests.report.conftest import build_run


def test_crash_inside_staging_leaves_no_output_and_no_marker(tmp_path):
    """A process SIGKILLed while writing ``embeddings/`` leaves only a ``.tmp-`` sibling."""
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal
        from pipeline.rundir import RunDir
        run = RunDir({str(run_dir)!r})
        with run.staging("embeddings") as tmp:
            os.makedirs(tmp)
            open(os.path.join(tmp, "part-00000.parquet"), "wb").write(b"PAR1 half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        run.mark_done("embed")
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120)
    assert out.returncode == -9
    run = RunDir(str(run_dir))
    assert not run.exists("embeddings") and not run.is_done("embed")
    leftovers = [p.name for p in run_dir.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith("embeddings.tmp-")


def test_exception_inside_staging_removes_the_temporary(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(RuntimeError):
        with run.staging("clusters", "level_1") as tmp:
            Path(tmp).mkdir(parents=True)
            (Path(tmp) / "centroids.npy").write_bytes(b"partial")
            raise RuntimeError("worker died")
    assert not run.exists("clusters", "level_1")
    assert list((tmp_path / "run" / "clusters").iterdir()) == []


def test_output_without_marker_is_recomputed(tmp_path):
    """A manifest left by a crash after writing but before its marker is not trusted."""
    run = build_run(tmp_path)
    good = pq.read_table(run.path("manifest.parquet"))
    run.clear("sample")
    Path(run.path("manifest.parquet")).write_bytes(b"not a parquet file")
    run_sample(run, {"target_size": 24, "strategy": "closest", "multiplier": 1}, seed=0)
    assert pq.read_table(run.path("manifest.parquet")).equals(good)
    assert run.is_done("sample")


def test_marker_with_another_config_is_not_trusted(tmp_path):
    run = build_run(tmp_path)
    first = pq.read_table(run.path("manifest.parquet"))
    summary = run_sample(run, {"target_size": 10, "strategy": "closest", "multiplier": 1}, seed=0)
    assert not summary.get("skipped") and summary["n_selected"] == 10
    assert pq.read_table(run.path("manifest.parquet")).num_rows < first.num_rows
    assert run_sample(run, {"target_size": 10, "strategy": "closest", "multiplier": 1}, seed=0)["skipped"]
