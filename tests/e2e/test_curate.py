"""End-to-end: `strata curate` on real UC Merced images with bad files mixed in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.artifacts import PRETRAIN_CHECKPOINT
from pipeline.curate import run_curate
from pipeline.kmeans.levels import load_levels
from pipeline.rundir import RunDir
from tests.io.bad_inputs import bad_inputs

REPO = Path(__file__).resolve().parents[2]
PER_CLASS = 5
SMALL = [
    "embed.image_size=64",
    "embed.max_pixels=1000000",
    "kmeans.n_clusters=[12,4]",
    "kmeans.sample_size=[4,2]",
    "kmeans.n_resampling_steps=[2,2]",
    "sample.target_size=40",
]


@pytest.fixture(scope="module")
def messy_input(tmp_path_factory, datasets_dir) -> Path:
    """5 real images per UC Merced class as a folder tree, plus every kind of bad file."""
    root = tmp_path_factory.mktemp("messy")
    table = pq.read_table(datasets_dir / "ucmerced", columns=["id", "label", "image"])
    seen: dict[str, int] = {}
    for row in table.to_pylist():
        if seen.get(row["label"], 0) < PER_CLASS:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            (root / row["label"]).mkdir(exist_ok=True)
            (root / row["id"]).write_bytes(row["image"])
    (root / "broken").mkdir()
    for name, (data, _) in bad_inputs(table.column("image")[0].as_py()).items():
        (root / "broken" / name).write_bytes(data)
    return root


def _config(input_path: Path, run_dir: Path, *extra: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("curate", overrides=[f"input.path={input_path}", f"run_dir={run_dir}", *SMALL, *extra])
    return OmegaConf.to_container(cfg, resolve=True)


def _manifest(run_dir: Path) -> pa.Table:
    return pq.read_table(run_dir / "manifest.parquet")


def test_curate_contract_resume_and_determinism(ray_session, messy_input, tmp_path):
    n_good = 21 * PER_CLASS
    first = tmp_path / "first"
    run = RunDir(str(first))
    run_curate(run, _config(messy_input, first))

    # embeddings: one row per kept image, fixed-size float32 list, carried label
    emb = pq.read_table(first / "embeddings")
    assert pa.types.is_fixed_size_list(emb.schema.field("embedding").type)
    assert emb.schema.field("embedding").type.value_type == pa.float32()
    assert {"id", "uri", "label"} <= set(emb.column_names)
    rejects = pq.read_table(first / "rejects.parquet").to_pylist()
    reasons = {Path(r["id"]).name: r["reason"] for r in rejects}
    assert set(reasons) == {"truncated.jpg", "empty.jpg", "notes.txt", "huge.png"}
    assert reasons["huge.png"].startswith("too large")
    counts = run.read_json("run.json")["counts"]["embed"]
    assert counts["read"] == counts["kept"] + counts["rejected"] == n_good + 9
    assert emb.num_rows == n_good + 5  # grayscale, RGBA, palette, CMYK, 16-bit were converted

    manifest = _manifest(first)
    assert {"id", "uri", "level_1", "level_2", "distance", "multiplicity", "label"} <= set(manifest.column_names)
    assert sum(manifest.column("multiplicity").to_pylist()) == 40
    assert set(manifest.column("id").to_pylist()) <= set(emb.column("id").to_pylist())

    # rerun in place: every step is skipped, nothing changes
    markers = {p.name: p.stat().st_mtime for p in (first / "_markers").iterdir()}
    run_curate(run, _config(messy_input, first))
    assert {p.name: p.stat().st_mtime for p in (first / "_markers").iterdir()} == markers
    assert _manifest(first).equals(manifest)

    # same input + same seed in a fresh run directory -> identical manifest
    second = tmp_path / "second"
    run_curate(RunDir(str(second)), _config(messy_input, second))
    assert _manifest(second).equals(manifest)

    # another seed changes the selection but not the contract
    third = tmp_path / "third"
    run_curate(RunDir(str(third)), _config(messy_input, third, "seed=7", "sample.strategy=random"))
    assert _manifest(third).num_rows == manifest.num_rows
    assert not _manifest(third).equals(manifest)


@pytest.fixture(scope="module")
def cli_run(messy_input, tmp_path_factory) -> tuple[Path, str]:
    """`strata curate` run as a process on the messy input: (run_dir, stdout)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    strata = Path(sys.executable).with_name("strata")
    run_dir = tmp_path_factory.mktemp("cli") / "cli"
    cmd = [
        str(strata),
        "curate",
        f"input.path={messy_input}",
        f"run_dir={run_dir}",
        *SMALL,
        "ray.num_cpus=2",
        "ray.object_store_memory=300000000",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "started local Ray" not in out.stderr  # a small input: no step needed Ray
    return run_dir, out.stdout


def _embeddings(run_dir: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "embeddings").glob("*.parquet")))


@pytest.mark.slow
def test_in_process_and_ray_engines_write_the_same_run(ray_session, messy_input, tmp_path):
    """Small inputs embed and cluster in process (pipeline.engine); the Ray path gives the same run."""
    runs = {}
    for name, extra in {
        "local": ("embed.engine=local", "kmeans.in_process=true"),
        "ray": ("embed.engine=ray", "kmeans.in_process=false"),
    }.items():
        run_dir = tmp_path / name
        counts = run_curate(RunDir(str(run_dir)), _config(messy_input, run_dir, *extra))
        assert counts["embed"]["engine"] == name
        runs[name] = run_dir
    local, ray_run = runs["local"], runs["ray"]
    assert _embeddings(local).equals(_embeddings(ray_run))  # same rows, order and vectors, bit for bit
    assert pq.read_table(local / "rejects.parquet").equals(pq.read_table(ray_run / "rejects.parquet"))
    assert pq.read_table(local / "dedup" / "duplicates.parquet").equals(
        pq.read_table(ray_run / "dedup" / "duplicates.parquet")
    )
    assert _manifest(local).equals(_manifest(ray_run))
    # where a step ran is not part of its fingerprint: the other engine reuses every finished step
    markers = {p.name: p.stat().st_mtime for p in (local / "_markers").iterdir()}
    run_curate(RunDir(str(local)), _config(messy_input, local, "embed.engine=ray", "kmeans.in_process=false"))
    assert {p.name: p.stat().st_mtime for p in (local / "_markers").iterdir()} == markers


def test_strata_cli_runs_the_curate_job(cli_run):
    run_dir, stdout = cli_run
    assert f"manifest: {run_dir / 'manifest.parquet'}" in stdout
    # 114 files: embedded and clustered in the job's own process (Ray never started: cli_run)
    counts = json.loads((run_dir / "run.json").read_text())["counts"]
    assert counts["embed"]["engine"] == "local"
    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert (
        manifest.num_rows == sum(manifest.column("multiplicity").to_pylist()) == 40
    )  # sample.target_size, multiplier 1


def test_report_of_the_cli_run_shows_its_real_counts_and_cluster_sizes(cli_run):
    run_dir, stdout = cli_run
    assert f"report:   {run_dir / 'report.html'}" in stdout
    html = (run_dir / "report.html").read_text()
    counts = json.loads((run_dir / "run.json").read_text())["counts"]
    cards = {k: int(v.replace(",", "")) for k, v in re.findall(r'id="count-(\w+)"><b>([\d,]+)</b>', html)}
    embed, dedup, cluster, sample = (counts[k] for k in ("embed", "dedup", "cluster", "sample"))
    # 21 classes x 5 good images + 9 bad files, 4 of them undecodable (test_curate_contract_resume_and_determinism)
    assert cards["read"] == embed["read"] == 21 * PER_CLASS + 9
    assert cards["rejected"] == embed["rejected"] == 4
    assert (
        cards["read"] - cards["rejected"]
        == embed["kept"]
        == pq.ParquetDataset(run_dir / "embeddings").read(columns=["id"]).num_rows
    )
    assert cards["deduplicated"] == dedup["duplicates"] == embed["kept"] - dedup["kept"]
    assert cards["clustered"] == cluster["n_points"] == dedup["kept"]
    assert cards["selected"] == sample["n_selected"] == 40
    assert cards["unique_selected"] == sample["n_rows"] == pq.read_metadata(run_dir / "manifest.parquet").num_rows

    # one rank-size chart per level: its title holds the cluster count, its caption the largest and
    # smallest cluster, and the "before sampling" curve has one point per non-empty cluster
    section = html[html.index('<section id="clusters">') :]
    section = section[: section.index("</section>")]
    _, levels = load_levels(RunDir(str(run_dir)))
    charts = section.split("<h3>")[1:]
    assert len(charts) == len(levels) == len(cluster["levels"]) == 2
    cluster_of_point = np.arange(cluster["n_points"])
    for chart, level, recorded in zip(charts, levels, cluster["levels"]):
        cluster_of_point = level.assignments[cluster_of_point]  # sizes in images at every level
        sizes = np.bincount(cluster_of_point, minlength=recorded["n_clusters"])
        assert chart.startswith(f"Level {recorded['level']}: {recorded['n_clusters']} clusters</h3><svg")
        assert f"largest {int(sizes.max()):,}, smallest {int(sizes.min()):,}" in chart
        before = re.search(r'<polyline points="([^"]*)"[^>]*><title>before sampling</title>', chart).group(1)
        assert len(before.split()) == recorded["non_empty"] == int((sizes > 0).sum())
        assert "<title>after sampling</title>" in chart


def test_curate_with_pretraining_embeds_with_the_ssl_backbone(ray_session, messy_input, tmp_path):
    run_dir = tmp_path / "ssl"
    cfg = _config(
        messy_input,
        run_dir,
        "pretrain.enabled=true",
        "pretrain.train.epochs=1",
        "pretrain.train.batch_size=16",
        "pretrain.train.max_steps_per_epoch=2",
        "pretrain.ssl.image_size=32",
        "pretrain.train.cpus_per_worker=0.5",
        "dedup.enabled=false",
    )  # two SGD steps give near-identical features: nothing to dedup against
    run = RunDir(str(run_dir))
    run_curate(run, cfg)
    checkpoint = run.path(PRETRAIN_CHECKPOINT)
    assert Path(checkpoint).is_dir()
    embed_cfg = run.read_json("run.json")["counts"]["embed"]
    emb = pq.read_table(run_dir / "embeddings")
    # the SSL backbone's feature width, not EfficientNet's 1280
    assert emb.schema.field("embedding").type.list_size == embed_cfg["dim"] != 1280
    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert manifest.num_rows == sum(manifest.column("multiplicity").to_pylist()) == 40
    assert set(manifest.column("id").to_pylist()) <= set(emb.column("id").to_pylist())
