"""The step contract on real images: a changed input recomputes its dependents, a copied run does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.curate import run_curate
from pipeline.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "embed.image_size=64",
    "kmeans.n_clusters=[8,3]",
    "kmeans.sample_size=[4,2]",
    "kmeans.n_resampling_steps=[1,1]",
    "sample.target_size=24",
    "report.enabled=true",
]
PER_CLASS = 12


def _folder(root: Path, datasets_dir: Path, classes: list[str]) -> Path:
    table = pq.read_table(datasets_dir / "ucmerced", columns=["id", "label", "image"])
    for label in classes:
        rows = [r for r in table.filter(table.column("label").to_numpy(zero_copy_only=False) == label).to_pylist()][
            :PER_CLASS
        ]
        (root / label).mkdir(parents=True)
        for r in rows:
            (root / label / Path(r["id"]).name).write_bytes(r["image"])
    return root


def _config(input_path: Path, run_dir: Path) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("curate", overrides=[f"input.path={input_path}", f"run_dir={run_dir}", *SMALL])
    return OmegaConf.to_container(cfg, resolve=True)


def _finished(run_dir: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text())["finished_at"] for p in (run_dir / "_markers").glob("*.json")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, datasets_dir) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inputs")
    return (
        _folder(root / "A", datasets_dir, ["harbor", "forest", "river"]),
        _folder(root / "B", datasets_dir, ["beach", "airplane", "golfcourse"]),
    )


def test_changed_input_never_serves_outputs_of_the_old_one(ray_session, inputs, tmp_path):
    a, b = inputs
    run_dir = tmp_path / "run"
    run_curate(RunDir(str(run_dir)), _config(a, run_dir))
    first = _finished(run_dir)
    run_curate(RunDir(str(run_dir)), _config(b, run_dir))
    second = _finished(run_dir)
    assert all(second[s] > first[s] for s in ("embed", "dedup", "cluster", "sample", "report")), (first, second)
    labels = set(pq.read_table(run_dir / "manifest.parquet").column("label").to_pylist())
    assert labels <= {"beach", "airplane", "golfcourse"} and len(labels) == 3
    for name in ("duplicates", "kept"):
        ids = pq.read_table(run_dir / "dedup" / f"{name}.parquet").column("id").to_pylist()
        assert all(i.split("/")[0] in {"beach", "airplane", "golfcourse"} for i in ids)


def test_copied_run_skips_every_finished_step_and_a_changed_setting_only_its_dependents(ray_session, inputs, tmp_path):
    a, _ = inputs
    original = tmp_path / "original"
    run_curate(RunDir(str(original)), _config(a, original))
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(original, copy)
    before = _finished(copy)
    run_curate(RunDir(str(copy)), _config(a, copy))
    assert _finished(copy) == before  # nothing recomputed
    assert pq.read_table(copy / "manifest.parquet").equals(pq.read_table(original / "manifest.parquet"))

    cfg = _config(a, copy)
    cfg["sample"]["target_size"] = 12
    run_curate(RunDir(str(copy)), cfg)
    after = _finished(copy)
    assert {s for s in after if after[s] != before[s]} == {"sample", "report"}
    assert pq.read_table(copy / "manifest.parquet").num_rows <= 12
