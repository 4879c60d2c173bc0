"""Real AID scenes: multi-scale stage features separate confusable urban classes better than the last layer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.embed.embedder import Embedder

CLASSES = ["Center", "Church", "Commercial", "Industrial", "Park", "Resort", "School", "Square"]


@pytest.fixture(scope="module")
def confusable(datasets_dir):
    """The first 40 images of each of 8 confusable AID classes: (JPEG bytes, labels)."""
    table = pa.concat_tables(
        [pq.read_table(p, columns=["label", "image"]) for p in sorted((datasets_dir / "aid150").glob("part-*.parquet"))]
    )
    rows = np.concatenate([np.flatnonzero(np.asarray(pc.equal(table.column("label"), c)))[:40] for c in CLASSES])
    sub = table.take(rows)
    return sub.column("image").to_pylist(), np.asarray(sub.column("label").to_pylist())


def loo_1nn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(axis=1)] == labels).mean())


def test_stage_features_beat_the_last_layer_on_confusable_aid_scenes(confusable):
    images, labels = confusable
    cfg = {"image_size": 160, "batch_size": 32}
    pix = np.stack([Embedder(cfg).decode(b) for b in images])
    head = Embedder({**cfg, "features": "head"}).embed_arrays(pix)
    stages = Embedder({**cfg, "features": "stages"}).embed_arrays(pix)
    assert head.shape == (320, 1280) and stages.shape == (320, 744)
    acc_head, acc_stages = loo_1nn_accuracy(head, labels), loo_1nn_accuracy(stages, labels)
    # random 40-per-class subsets gave +0.02 to +0.11; all 2,510 images of these classes: 0.66 vs 0.76
    assert acc_stages > acc_head + 0.02, (acc_head, acc_stages)
    assert acc_head > 1.5 / len(CLASSES)  # both far above chance: real features, not noise
