"""Query images on a run made with ``embed.dim`` (PCA): an uploaded pool image (``strata search``/``serve``)
or a starter image (``strata active``) is projected like the pool, so it finds its own stored embedding
with score ~1. A real embedder (a tiny SSL checkpoint), no Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.artifacts import EMBEDDINGS
from pipeline.embed.config import EmbedConfig
from pipeline.embed.reduce import query_transform, reduce_run_embeddings
from pipeline.io.tables import embeddings_to_arrow, read_embeddings
from pipeline.rundir import RunDir
from pipeline.search.service import image_to_bytes
from tests.search.conftest import synthetic_images


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    """40 synthetic PNGs embedded with a small_cnn SSL checkpoint (full width), reduced to 6-d by PCA, indexed."""
    from pipeline.embed.embedder import Embedder
    from pipeline.search.build import build_run_index
    from pipeline.ssl.checkpoint import save_checkpoint
    from pipeline.ssl.train import build_model, checkpoint_meta

    tmp = tmp_path_factory.mktemp("reduced")
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
    save_checkpoint(str(tmp / "ckpt"), model, checkpoint_meta(ssl, model, 1, [{"epoch": 1, "loss": 1.0}]))
    embed_cfg = {"backbone": "ssl", "checkpoint": str(tmp / "ckpt"), "dim": 6, "device": "cpu", "l2_normalize": True}
    images, labels = synthetic_images(40, size=32)
    paths = []
    for i, im in enumerate(images):
        paths.append(str(tmp / f"im{i:02d}.png"))
        im.save(paths[-1])
    full = Embedder(embed_cfg).embed_pil(images)
    assert full.shape[1] > 6
    run = RunDir(str(tmp / "run"))
    run.fs.makedirs(run.path(EMBEDDINGS), exist_ok=True)
    for k, rows in enumerate(np.array_split(np.arange(40), 2)):
        table = pa.table(
            {"id": [f"im{i:02d}" for i in rows], "uri": [paths[i] for i in rows], "label": [labels[i] for i in rows]}
        )
        table = table.append_column("embedding", embeddings_to_arrow(full[rows]))
        pq.write_table(table, f"{run.path(EMBEDDINGS)}/part-{k:05d}.parquet")
    run.update_run_json(config={"embed": embed_cfg})
    assert reduce_run_embeddings(run, EmbedConfig.from_dict(embed_cfg))["reduction"]["from"] == full.shape[1]
    build_run_index(run, {"kind": "flat"})
    return run, images, paths, full, embed_cfg


def test_uploaded_pool_image_finds_itself(reduced_run):
    from pipeline.search.service import SearchService

    run, images, _, full, _ = reduced_run
    table, stored = read_embeddings(run.path(EMBEDDINGS))
    ids = table.column("id").to_pylist()
    assert stored.shape == (40, 6)
    # the embedder's output projected like the pool equals the pool's own stored (reduced) embedding
    np.testing.assert_allclose(query_transform(run)(full)[np.argsort(ids)], stored[np.argsort(ids)], atol=1e-5)
    service = SearchService.from_run(run)
    for i in (3, 17, 31):
        got = service.search(image=image_to_bytes(images[i]), k=3)["results"]
        assert got[0]["id"] == f"im{i:02d}" and got[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_active_starter_image_is_projected(reduced_run):
    from pipeline.active.run import starter_rows_and_vectors

    run, _, paths, _, embed_cfg = reduced_run
    table, stored = read_embeddings(run.path(EMBEDDINGS))
    ids = np.asarray(table.column("id").to_pylist(), dtype=str)
    cfg = {"starter": {"image": [paths[5], paths[22]]}}
    rows, vectors = starter_rows_and_vectors(cfg, ids, embed_cfg, 6, query_transform(run, dim=6))
    assert len(rows) == 0 and vectors.shape == (2, 6)
    want = stored[[list(ids).index("im05"), list(ids).index("im22")]]
    np.testing.assert_allclose(vectors, want, atol=1e-5)
    with pytest.raises(ValueError, match="starter images embed to dimension"):  # not projected: full width
        starter_rows_and_vectors(cfg, ids, embed_cfg, 6)


def test_strata_active_with_a_starter_image_on_the_reduced_run(reduced_run, tmp_path):
    import shutil

    from pipeline.active.run import run_active

    run, _, paths, _, embed_cfg = reduced_run
    copy = RunDir(str(tmp_path / "run"))
    shutil.copytree(run.root, copy.root)
    cfg = {
        "active": {"budget": 0.5, "batch_size": 4, "n_neighbors": 4, "n_random": 2},
        "starter": {"image": paths[0]},
        "labeler": {"kind": "oracle"},
        "oracle": {"column": "label", "positive": "field"},
        "export": {"imagefolder": "none"},
        "embed": embed_cfg,
        "seed": 1,
    }
    summary = run_active(copy, cfg)
    assert summary["n_pool"] == 40 and summary["n_labeled"] > 0


def test_a_query_of_another_width_is_a_one_line_error(reduced_run):
    run, _, _, full, _ = reduced_run
    with pytest.raises(
        ValueError, match=rf"query embeddings are 5-d but the run's embeddings are 6-d \(PCA from {full.shape[1]}\)"
    ):
        query_transform(run)(np.zeros((1, 5), np.float32))
    # already in the run's space (e.g. the embedder outputs the reduced width): unchanged
    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    np.testing.assert_array_equal(query_transform(run)(x), x)
