"""Selection objectives on constructed embeddings where the right pick is known, and against references."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.coreset.kcenter import k_center_greedy
from pipeline.kmeans.hierarchical import LevelResult
from pipeline.sampling.config import sampling_config
from pipeline.sampling.objectives import OBJECTIVES, resolve_selection
from pipeline.sampling.objectives.typical import typicality
from tests.sampling.test_balanced import sample


def csr(assignments: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    level = LevelResult.from_assignments(np.zeros((assignments.max() + 1, 2), np.float32), assignments, distances)
    return level.offsets, level.sorted_clusters


def picks(name: str, x, offsets, items, budgets, seed: int = 0, **settings) -> list[set[int]]:
    """The items each cluster takes: rank < budget."""
    obj = OBJECTIVES[name]
    rank = obj.rank(
        x if obj.needs_embeddings else None, offsets, items, budgets, np.random.default_rng(seed), **settings
    )
    cluster = np.repeat(np.arange(len(budgets)), np.diff(offsets))
    taken = rank < budgets[cluster]
    return [set(items[taken & (cluster == c)].tolist()) for c in range(len(budgets))]


@pytest.fixture
def blob_and_line():
    """Cluster 0: a tight blob of 5 points around item 2 plus two far outliers (0 and 1, listed
    closest to the centroid first to tell the objectives apart); cluster 1: 10 points on a line."""
    rng = np.random.default_rng(0)
    blob = np.array([[0, 0], [0.1, 0], [-0.1, 0], [0, 0.1], [0, -0.1]]) + 3.0
    x = np.vstack([[[0.0, 0.0], [6.0, 6.0]], blob, np.c_[np.arange(10.0), np.full(10, 20.0)]]).astype(np.float32)
    x += rng.normal(0, 1e-4, x.shape).astype(np.float32)
    assignments = np.r_[np.zeros(7, int), np.ones(10, int)]
    distances = np.r_[0.0, 0.1, np.linspace(0.2, 0.6, 5), np.arange(10.0)].astype(np.float32)
    return x, *csr(assignments, distances)


def test_closest_takes_the_csr_order(blob_and_line):
    x, offsets, items = blob_and_line
    assert picks("closest", x, offsets, items, np.array([2, 3])) == [{0, 1}, {7, 8, 9}]


def test_typical_takes_the_densest_point(blob_and_line):
    x, offsets, items = blob_and_line
    assert picks("typical", x, offsets, items, np.array([1, 0]), k=4, max_reference=256)[0] == {2}  # the blob's centre
    assert picks("typical", x, offsets, items, np.array([5, 0]), k=4, max_reference=256)[0] == {
        2,
        3,
        4,
        5,
        6,
    }  # never an outlier


def test_coverage_spreads_out_from_the_closest_point(blob_and_line):
    x, offsets, items = blob_and_line
    # line x = 0..9 (items 7..16, closest first = item 7 at 0): then the far end (9), then the middle
    assert picks("coverage", x, offsets, items, np.array([0, 3]))[1] == {7, 16, 11}
    # the blob cluster: closest (item 0 at the origin), then the farthest outlier, then the blob
    assert picks("coverage", x, offsets, items, np.array([3, 0]))[0] - {2, 3, 4, 5, 6} == {0, 1}


def test_random_is_a_seeded_uniform_order(blob_and_line):
    x, offsets, items = blob_and_line
    budgets = np.array([1, 1])
    first = [picks("random", x, offsets, items, budgets, seed=s)[1].pop() for s in range(400)]
    assert first[:20] == [picks("random", x, offsets, items, budgets, seed=s)[1].pop() for s in range(20)]
    counts = np.bincount(np.array(first) - 7, minlength=10)
    assert counts.min() > 15 and counts.max() < 70  # each of 10 points about 40 times


def random_clusters(seed: int, n: int = 400, k: int = 7, d: int = 5):
    rng = np.random.default_rng(seed)
    assignments = np.r_[np.arange(k), rng.integers(k, size=n - k)]
    x = (rng.normal(size=(k, d))[assignments] * 3 + rng.normal(size=(n, d))).astype(np.float32)
    offsets, items = csr(assignments, rng.random(n).astype(np.float32))
    return rng, x, offsets, items


@pytest.mark.parametrize("seed", [0, 1])
def test_typicality_matches_brute_force_knn(seed):
    from sklearn.neighbors import NearestNeighbors

    _, x, offsets, items = random_clusters(seed)
    got = typicality(x, offsets, items, k=5, max_reference=10_000, rng=np.random.default_rng(0), block_rows=64)
    for c in range(len(offsets) - 1):
        members = items[offsets[c] : offsets[c + 1]]
        dist, _ = NearestNeighbors(n_neighbors=6).fit(x[members]).kneighbors(x[members])
        np.testing.assert_allclose(got[offsets[c] : offsets[c + 1]], 1 / dist[:, 1:].mean(1), rtol=1e-4)


def test_coverage_matches_k_center_greedy_in_every_cluster():
    rng, x, offsets, items = random_clusters(3)
    sizes = np.diff(offsets)
    budgets = np.minimum(rng.integers(0, 12, len(sizes)), sizes)
    got = picks("coverage", x, offsets, items, budgets)
    for c, b in enumerate(budgets):
        members = items[offsets[c] : offsets[c + 1]]
        want = (
            set(members[k_center_greedy(x[members], int(b), start=0, metric="l2", device="cpu")[0]].tolist())
            if b
            else set()
        )
        assert got[c] == want


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_keeps_the_sampling_contract(name):
    """Exact size, no item twice, multiplicities within the multiplier, same seed = same selection."""
    rng, x, offsets, items = random_clusters(5, n=300, k=40)
    assignments = np.empty(len(items), np.int64)
    assignments[items] = np.repeat(np.arange(40), np.diff(offsets))
    level1 = LevelResult.from_assignments(
        np.zeros((40, 2), np.float32), assignments, rng.random(300).astype(np.float32)
    )
    level2 = LevelResult.from_assignments(
        np.zeros((8, 2), np.float32), np.r_[np.arange(8), rng.integers(8, size=32)], rng.random(40).astype(np.float32)
    )
    settings = sampling_config({"strategy": name})["typical"] if name == "typical" else {}
    for target, mult in ((37, 1), (300, 1), (450, 2)):
        runs = [
            sample([level1, level2], target, strategy=name, multiplier=mult, rng=7, x=x, settings=settings)
            for _ in range(2)
        ]
        sel = runs[0]
        assert sel.multiplicity.sum() == target
        assert len(np.unique(sel.indices)) == len(sel.indices)
        assert 1 <= sel.multiplicity.min() and sel.multiplicity.max() <= mult
        np.testing.assert_array_equal(sel.indices, runs[1].indices)


def test_objectives_that_need_embeddings_refuse_to_run_without():
    level = LevelResult.from_assignments(np.zeros((1, 2), np.float32), np.zeros(4, np.int64), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="needs the embeddings"):
        sample([level], 2, strategy="typical")


def test_auto_follows_the_budget_rule_and_bad_names_are_refused():
    small = {"strategy": "typical", "pick_level": "budget", "allocation_power": 0.0, "budget_split": 4}
    large = {"strategy": "coverage", "pick_level": 1, "allocation_power": 0.5, "budget_split": None}
    repeats = {"strategy": "closest", "pick_level": 1, "allocation_power": 0.0, "budget_split": None}
    auto = {"max_fraction": 0.05, "max_budget_clusters": 40, "small": small, "large": large, "repeats": repeats}
    cfg = sampling_config({"auto": auto})
    assert resolve_selection(cfg, 40, 1000) == small
    assert resolve_selection(cfg, 41, 10000) == large  # over max_budget_clusters: no k-means with k = 41
    assert resolve_selection(cfg, 30, 500) == large  # over 5% of the pool
    assert resolve_selection({**cfg, "multiplier": 2}, 10, 1000) == repeats  # budget clusters pick each point once
    assert resolve_selection({**cfg, "multiplier": 2}, 30, 500) == repeats
    with pytest.raises(ValueError, match="needs sample.multiplier=1"):
        sampling_config({"strategy": "typical", "pick_level": "budget", "multiplier": 2})
    with pytest.raises(ValueError, match="sample.auto.repeats.pick_level cannot be budget"):
        sampling_config({"auto": {"repeats": small}})
    fixed = {**cfg, "strategy": "closest", "pick_level": 2, "allocation_power": 1.0}
    assert resolve_selection(fixed, 10**6, 10) == {
        "strategy": "closest",
        "pick_level": 2,
        "allocation_power": 1.0,
        "budget_split": cfg["budget_split"],
    }
    with pytest.raises(ValueError, match="one of"):
        resolve_selection({**cfg, "strategy": "densest"}, 1, 10)
    with pytest.raises(ValueError, match="sample.strategy"):
        sampling_config({"strategy": "densest"})
    with pytest.raises(ValueError, match="sample.auto.small.strategy"):
        sampling_config({"auto": {"small": {"strategy": "nearest"}}})
    with pytest.raises(ValueError, match="sample.pick_level"):
        sampling_config({"strategy": "closest", "pick_level": 0})
    with pytest.raises(ValueError, match="sample.allocation_power"):
        sampling_config({"strategy": "closest", "allocation_power": -1})
    with pytest.raises(ValueError, match="sample.budget_split"):
        sampling_config({"strategy": "typical", "pick_level": "budget", "budget_split": 0})
    with pytest.raises(ValueError, match="sample.auto.small.budget_split"):
        sampling_config({"auto": {"small": {"budget_split": "level"}}})


def test_typical_without_settings_takes_them_from_conf(blob_and_line):
    """``strata coreset`` calls the objectives without the sample settings: typical reads sample.typical."""
    x, offsets, items = blob_and_line
    conf = sampling_config({})["typical"]
    budgets = np.array([3, 4])
    assert picks("typical", x, offsets, items, budgets, seed=1) == picks(
        "typical", x, offsets, items, budgets, 1, **conf
    )
