"""Shared benchmark data: real-dataset embeddings computed once by the project's own embed step.

``aid_embeddings()`` runs ``pipeline.embed.run_embed`` on ``../shared/datasets/aid150`` (10,000
images) into ``benchmarks/.cache/aid150-<backbone>-<size>/`` and returns its table and matrix;
later calls just read the cache (the run directory's done-marker makes the step resumable).
"""

from __future__ import annotations

import os
import platform
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("STRATA_DATASETS", REPO.parent / "shared" / "datasets"))
CACHE = REPO / "benchmarks" / ".cache"


def ensure_ray(num_cpus: int = 2) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=int(3e8),
            include_dashboard=False,
            log_to_driver=False,
        )


def dataset_embeddings(
    name: str,
    backbone: str = "efficientnet_lite0",
    image_size: int = 160,
    checkpoint: str | None = None,
    features: str = "head",
    tta: str = "none",
) -> tuple[pa.Table, np.ndarray]:
    """(table with ``id``, ``uri``, ``label``..., (N, D) float32 L2-normalised embeddings) of a shared dataset.

    ``features`` / ``tta``: ``embed.features`` / ``embed.tta`` (multi-scale stages, test-time views).
    """
    from pipeline.embed.stage import run_embed
    from pipeline.io.tables import read_embeddings
    from pipeline.rundir import RunDir

    # checkpoints are often all called model.pt: tell them apart by their resolved path
    tag = backbone if checkpoint is None else f"{backbone}-{zlib.crc32(str(Path(checkpoint).resolve()).encode()):08x}"
    tag += "" if features == "head" else f"-{features}"
    tag += "" if tta == "none" else f"-tta_{tta}"
    run = RunDir(str(CACHE / f"{name}-{tag}-{image_size}"))
    embed_cfg = {
        "backbone": backbone,
        "checkpoint": checkpoint,
        "image_size": image_size,
        "batch_size": 64,
        "pool_size": 2,
        "features": features,
        "tta": tta,
    }
    input_cfg = {"path": str(DATASETS / name)}
    if not run.exists("_markers", "embed.json"):
        ensure_ray()
        run_embed(run, input_cfg, embed_cfg)
    return read_embeddings(run.path("embeddings"))


def aid_embeddings(
    backbone: str = "efficientnet_lite0", image_size: int = 160, features: str = "head", tta: str = "none"
) -> tuple[pa.Table, np.ndarray]:
    """AID (10,000 images of 150x150, 30 classes) embedded with the default backbone at 160 px."""
    return dataset_embeddings("aid150", backbone, image_size, features=features, tta=tta)


def machine() -> str:
    """One line describing where a benchmark ran."""
    return f"{platform.node()} {os.cpu_count()} cores {platform.machine()} python {platform.python_version()} ({time.strftime('%Y-%m-%d')})"


if __name__ == "__main__":
    t0 = time.time()
    for name in ("aid150", "ucmerced"):
        table, x = dataset_embeddings(name)
        print(name, x.shape, f"{time.time() - t0:.0f}s")
