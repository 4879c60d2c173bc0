"""embed.dim: PCA fitted on the pool against a numpy SVD reference, recorded in run.json-ready
counts and Parquet metadata; the SSL projection head as the reduction."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.artifacts import EMBEDDINGS
from pipeline.embed.config import EmbedConfig
from pipeline.embed.reduce import (
    embeddings_metadata,
    fit_pca,
    query_transform,
    read_reduction,
    reduce_run_embeddings,
)
from pipeline.io.tables import embeddings_to_arrow
from pipeline.rundir import RunDir


def _low_rank(n=300, d=24, rank=5, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.array([8.0, 5.0, 3.0, 2.0, 1.0])[:rank]
    return (
        (rng.normal(size=(n, rank)) * scales) @ np.linalg.qr(rng.normal(size=(d, rank)))[0].T
        + 3.0
        + rng.normal(scale=0.05, size=(n, d))
    )


def _numpy_reference(x, dim):
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:dim].T, s**2 / (s**2).sum()


def test_pca_matches_numpy_svd_up_to_sign():
    x = _low_rank()
    pca = fit_pca(x, 3)
    ours = pca.transform(x, l2_normalize=False)
    ref, ratio = _numpy_reference(x, 3)
    signs = np.sign((ours * ref).sum(axis=0))
    np.testing.assert_allclose(ours, ref * signs, atol=1e-4)
    np.testing.assert_allclose(pca.explained_variance_ratio, ratio[:3], rtol=1e-6)
    assert ours.dtype == np.float32 and ours.shape == (300, 3)
    # deterministic orientation: the largest coordinate of each component is positive
    assert (pca.components[np.arange(3), np.abs(pca.components).argmax(axis=1)] > 0).all()
    unit = pca.transform(x, l2_normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="embed.dim=30"):
        fit_pca(x, 30)


def _write_run(tmp_path, x, parts=3):
    run = RunDir(str(tmp_path / "run"))
    out = run.path(EMBEDDINGS)
    run.fs.makedirs(out, exist_ok=True)
    for k, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
        table = pa.table({"id": [f"img{i}" for i in rows], "embedding": embeddings_to_arrow(x[rows]), "label": rows})
        pq.write_table(table, f"{out}/part-{k:05d}.parquet")
    return run


def test_run_embeddings_reduced_in_place_and_recorded(tmp_path):
    x = _low_rank().astype(np.float32)
    run = _write_run(tmp_path, x)
    cfg = EmbedConfig.from_dict({"dim": 4, "l2_normalize": False})
    record = reduce_run_embeddings(run, cfg)
    assert record["dim"] == 4 and record["reduction"]["method"] == "pca" and record["reduction"]["from"] == 24
    ref, ratio = _numpy_reference(x.astype(np.float64), 4)
    assert record["reduction"]["fit_rows"] == 300
    assert record["reduction"]["explained_variance"] == pytest.approx(ratio[:4].sum(), abs=1e-5)
    table = pq.read_table(run.path(EMBEDDINGS))
    assert table.schema.field("embedding").type.list_size == 4 and table.column("label").to_pylist() == list(range(300))
    assert embeddings_metadata(pq.read_schema(f"{run.path(EMBEDDINGS)}/part-00001.parquet")) == record["reduction"]
    got = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(300, 4)
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=1e-3)
    # the fitted projection is kept, so a query embedding can be projected the same way
    np.testing.assert_allclose(read_reduction(run).transform(x[:5], l2_normalize=False), got[:5], atol=1e-5)
    for source in (run, run.path(EMBEDDINGS)):  # the query path: full-width queries land on the stored rows
        np.testing.assert_allclose(query_transform(source)(x[:5]), got[:5], atol=1e-5)
    with pytest.raises(ValueError, match=r"query embeddings are 7-d but the run's embeddings are 4-d \(PCA from 24\)"):
        query_transform(run)(x[:2, :7])
    assert reduce_run_embeddings(run, EmbedConfig.from_dict({})) == {}  # embed.dim=null: untouched


def test_bad_settings_fail_in_one_line():
    with pytest.raises(ValueError, match="embed.reduce=svd: choose pca or head"):
        EmbedConfig.from_dict({"reduce": "svd"})
    with pytest.raises(ValueError, match="embed.dim=0"):
        EmbedConfig.from_dict({"dim": 0})
    with pytest.raises(ValueError, match="needs embed=ssl"):
        EmbedConfig.from_dict({"dim": 16, "reduce": "head"})


def test_ssl_projection_head_as_the_reduction(tmp_path):
    from pipeline.backbones import build_backbone
    from pipeline.ssl.checkpoint import save_checkpoint
    from pipeline.ssl.train import build_model, checkpoint_meta

    torch.manual_seed(0)
    ssl = {
        "method": "simclr",
        "image_size": 32,
        "backbone": {"name": "small_cnn", "width": 8, "blocks_per_stage": 1},
        "head": {"hidden_dim": 32, "output_dim": 16, "temperature": 0.5},
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    model = build_model(ssl).eval()
    save_checkpoint(str(tmp_path / "ckpt"), model, checkpoint_meta(ssl, model, 1, [{"epoch": 1, "loss": 1.0}]))
    cfg = EmbedConfig.from_dict({"backbone": "ssl", "checkpoint": str(tmp_path / "ckpt"), "dim": 16, "reduce": "head"})
    assert cfg.features == "projection"
    backbone = build_backbone(cfg.backbone, cfg.checkpoint, cfg.features)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert backbone.dim == 16
        assert torch.allclose(backbone.module(x), model.projection_head(model.backbone(x)), atol=1e-5)
    run = _write_run(tmp_path, np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32), parts=1)
    assert reduce_run_embeddings(run, cfg)["reduction"]["method"] == "head"
    # queries: the embedder built from the recorded config already outputs the projection, kept as is
    q = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    np.testing.assert_array_equal(query_transform(run)(q), q)
    with pytest.raises(ValueError, match="query embeddings are 8-d but the run's embeddings are 16-d;"):
        query_transform(run)(q[:, :8])
    wrong = EmbedConfig.from_dict({"backbone": "ssl", "checkpoint": "x", "dim": 8, "reduce": "head"})
    with pytest.raises(ValueError, match="projection head outputs 16"):
        reduce_run_embeddings(run, wrong)


def test_dim_with_imported_embeddings_is_a_clear_error(tmp_path):
    from pipeline.embed.stage import run_embed

    run = RunDir(str(tmp_path / "run"))
    with pytest.raises(ValueError, match="input.format=embeddings keeps its width"):
        run_embed(run, {"path": str(tmp_path), "format": "embeddings"}, {"dim": 8})
