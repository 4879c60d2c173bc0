"""`strata curate` with every selection objective: one run directory, embeddings input (no images),
so only the sample and report steps recompute when the objective changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.curate import run_curate
from pipeline.rundir import RunDir
from pipeline.sampling.objectives import CHOICES

REPO = Path(__file__).resolve().parents[2]
SIZES = [200, 80, 30, 12, 6]  # hidden long-tailed concepts


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    concept = np.repeat(np.arange(len(SIZES)), SIZES)
    x = rng.normal(size=(len(SIZES), 16))[concept] * 3 + rng.normal(size=(len(concept), 16))
    path = tmp_path_factory.mktemp("vec") / "vectors.parquet"
    pq.write_table(
        pa.table(
            {
                "id": [f"v{i}" for i in range(len(x))],
                "embedding": pa.array([list(map(float, v)) for v in x], pa.list_(pa.float32())),
                "label": [f"c{c}" for c in concept],
            }
        ),
        path,
    )
    return path


def _curate(vectors: Path, run_dir: Path, *sample: str) -> dict:
    """``strata curate`` on the blobs (no dedup, k-means [40, 8] in process) with ``sample.*`` overrides;
    returns the run's counts."""
    overrides = [
        f"input.path={vectors}",
        "input.format=embeddings",
        f"run_dir={run_dir}",
        "dedup.enabled=false",
        "kmeans.n_clusters=[40,8]",
        "kmeans.in_process=true",
        *sample,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("curate", overrides=overrides), resolve=True)
    return run_curate(RunDir(str(run_dir)), cfg)


@pytest.mark.slow
def test_curate_runs_every_objective_and_records_it(vectors, tmp_path):
    run_dir = tmp_path / "run"
    chosen = {}
    for strategy in CHOICES:
        counts = _curate(vectors, run_dir, "sample.target_size=15", f"sample.strategy={strategy}")
        manifest = pq.read_table(run_dir / "manifest.parquet")
        assert counts["sample"]["n_selected"] == 15 == manifest.num_rows
        record = json.loads((run_dir / "run.json").read_text())["counts"]["sample"]
        assert record["strategy"] == strategy and record["objective"] in CHOICES[:-1]
        assert set(manifest.column("label").to_pylist()) == {f"c{i}" for i in range(len(SIZES))}
        report = (run_dir / "report.html").read_text()
        assert f"the selection took <b>{record['objective']}</b>" in report and "Small concepts" in report
        chosen[strategy] = (record["objective"], record["pick_level"], record["allocation_power"])
    # 15 of 328 items (4.6%): at most auto.max_fraction, so TypiClust (15 budget clusters, one pick each)
    assert chosen["auto"] == ("typical", "budget", 0.0)
    assert all(chosen[s] == (s, 1, 0.0) for s in CHOICES[:-1])
    assert "k-means with k = target_size (TypiClust)" in report


@pytest.mark.slow
def test_curate_with_a_pick_level_and_an_allocation_power(vectors, tmp_path):
    run_dir = tmp_path / "run"
    _curate(
        vectors,
        run_dir,
        "sample.target_size=60",
        "sample.strategy=coverage",
        "sample.pick_level=2",
        "sample.allocation_power=0.5",
    )
    record = json.loads((run_dir / "run.json").read_text())["counts"]["sample"]
    assert (record["objective"], record["pick_level"], record["allocation_power"]) == ("coverage", 2, 0.5)
    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert manifest.num_rows == 60 and len(set(manifest.column("id").to_pylist())) == 60
    report = (run_dir / "report.html").read_text()
    assert "Inside every level-2 cluster" in report and "size^0.5" in report


@pytest.mark.slow
def test_curate_with_typiclust_inside_the_clusters_of_a_level(vectors, tmp_path):
    """pick_level=budget with budget_split 2: 60 picks water-filled over the 8 level-2 clusters (8 x 2 <= 60 <
    40 x 2), then a k-means with k = each one's budget inside it; recorded in run.json and the report."""
    run_dir = tmp_path / "run"
    _curate(
        vectors,
        run_dir,
        "sample.target_size=60",
        "sample.strategy=typical",
        "sample.pick_level=budget",
        "sample.budget_split=2",
    )
    record = json.loads((run_dir / "run.json").read_text())["counts"]["sample"]
    assert (record["objective"], record["pick_level"], record["budget_split"], record["split_level"]) == (
        "typical",
        "budget",
        2,
        2,
    )
    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert manifest.num_rows == 60 and len(set(manifest.column("id").to_pylist())) == 60
    assert set(manifest.column("label").to_pylist()) == {f"c{i}" for i in range(len(SIZES))}
    from pipeline.kmeans.levels import load_levels
    from pipeline.sampling.balanced import points_per_cluster

    sizes = points_per_cluster(load_levels(RunDir(str(run_dir)))[1])[1]
    counts = np.bincount(manifest.column("level_2").to_numpy(), minlength=len(sizes))
    open_ = counts < sizes  # flat water-filling: the clusters not taken whole get x or x + 1 picks
    assert counts[open_].max() - counts[open_].min() <= 1 and np.all(sizes[~open_] <= counts[open_].min() + 1)
    report = (run_dir / "report.html").read_text()
    assert "water-filled down to the level-2 clusters" in report and "Small concepts" in report
