"""Candidate search (pipeline/dedup/candidates.py): the same pairs in process and as Ray tasks,
the IVF list count, and the engine choice."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dedup.candidates import candidate_pairs, descriptor_pairs, hamming_pairs, ivf_lists
from pipeline.dedup.config import dedup_config
from pipeline.dedup.copies import copy_scores, sharded_copy_scores
from pipeline.dedup.perceptual import d4, d4_phash, descriptors
from pipeline.engine import RAY

# the descriptor index settings of conf/dedup (seeded)
IVF = {k: dedup_config({})["copies"][k] for k in ("flat_max", "nprobe", "list_size", "train_per_list", "train_iters")}
IVF.update(seed=0, flat_max=100, nprobe=4)  # IVF above 100 images


def planted(n: int = 400, copies: int = 80, seed: int = 0) -> np.ndarray:
    """(n, 32, 32) uint8 smooth random grids, the last ``copies`` noisy D4 copies of the first ones."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (rng.random((n, 12, 12)) * 255).astype(np.uint8)
    grids = np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.Resampling.BICUBIC)) for g in small])
    src = np.arange(copies)
    views = d4(grids[src])[np.arange(copies), rng.integers(0, 8, copies)].astype(int)
    grids[n - copies :] = np.clip(views + rng.integers(-6, 7, views.shape), 0, 255)
    return grids


def pairs(i: np.ndarray, j: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(i.tolist(), j.tolist()))


def test_ivf_lists_keep_a_constant_list_size():
    assert ivf_lists(1_000_000, 128) == 7812  # a constant list size: a query scans nprobe * 128 rows at any N
    assert ivf_lists(10, 128) == 1


@pytest.mark.slow
def test_candidates_on_ray_tasks_are_the_pairs_found_in_process(ray_session):
    grids = planted()
    hashes, desc = d4_phash(grids), descriptors(grids)
    cfg = {**dedup_config({})["copies"], "seed": 0, "flat_max": 100, "nprobe": 4}  # IVF above 100 images
    local_stats: dict = {}
    ray_stats: dict = {}
    local = pairs(*candidate_pairs(hashes, desc, {**cfg, "engine": "local"}, local_stats))
    on_ray = pairs(*candidate_pairs(hashes, desc, {**cfg, "engine": "ray"}, ray_stats))
    assert local_stats["engine"] == "local" and ray_stats["engine"] == "ray"
    assert on_ray == local and {(k, 320 + k) for k in range(80)} <= local
    # several bands and several query shards, each one task
    shards = pairs(*descriptor_pairs(desc, 3, **IVF, shard=64, engine=RAY, threads=1))
    assert shards == pairs(*descriptor_pairs(desc, 3, **IVF, shard=64))
    assert pairs(*hamming_pairs(hashes, 6, engine=RAY)) == pairs(*hamming_pairs(hashes, 6))
    # verification in shards of pairs, each task given only its pairs' signatures
    i, j = (np.array(sorted(local))[:, c] for c in (0, 1))
    register = np.arange(len(i)) % 3 == 0
    on_tasks = sharded_copy_scores(hashes, grids, i, j, register, shard=50, engine=RAY)
    here = copy_scores(hashes, grids, i, j, register=register)
    np.testing.assert_array_equal(on_tasks[0], here[0])
    np.testing.assert_array_equal(on_tasks[1], here[1])


def test_engine_follows_the_size_and_bad_engine_is_an_error():
    grids = planted(60, 10)
    hashes, desc = d4_phash(grids), descriptors(grids)
    stats: dict = {}
    candidate_pairs(hashes, desc, {**dedup_config({})["copies"], "seed": 0}, stats)
    assert stats["engine"] == "local"  # 60 images <= local_max_images, no cluster
    with pytest.raises(ValueError, match="dedup.copies.engine"):
        dedup_config({"copies": {"engine": "spark"}})
