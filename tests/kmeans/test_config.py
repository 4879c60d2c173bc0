"""``kmeans.n_clusters: auto``: k per level from the pool size, size warnings, the cluster step."""

from __future__ import annotations

import logging

import pytest

from pipeline.config import load_group
from pipeline.kmeans.config import KMeansConfig, auto_n_clusters
from pipeline.kmeans.run import check_sizes, run_cluster

IN_PROCESS = {"in_process": True, "n_iters": [4, 4], "n_resampling_steps": [1, 1], "n_actors": 2}


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1_050, [210, 42]),  # the bundled demo after dedup: pool/5 (BENCHMARKS.md), then /5
        (10_000, [2_000, 400]),
        (12, [2]),  # an upper level would have fewer than 2 clusters
        (3, [1]),
        (0, [1]),
    ],
)
def test_auto_small_pools_follow_the_measured_rule(n, expected):
    assert auto_n_clusters(n) == expected


def test_auto_large_pools_grow_cluster_size_and_depth():
    for n, levels, lo, hi in [
        (100_000, 2, 8, 9),  # points per level-1 cluster
        (1_000_000, 3, 14, 16),
        (743_000_000, 4, 60, 80),  # Vo et al.: 10M level-1 clusters for 743M images (~74 each)
    ]:
        ks = auto_n_clusters(n)
        assert len(ks) == levels, (n, ks)
        assert lo <= n / ks[0] <= hi, (n, ks)
        assert all(a == b * 5 or a // 5 == b for a, b in zip(ks, ks[1:])), ks
    sizes = [auto_n_clusters(n)[0] for n in (10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_default_is_auto_and_per_level_lists_follow_the_chosen_depth():
    assert load_group("kmeans/default")["n_clusters"] == "auto"
    defaults = load_group("kmeans/default")
    two = KMeansConfig.from_dict({"n_clusters": "auto"}, n_points=1_050)
    assert [lc.n_clusters for lc in two.levels] == [210, 42]
    assert [lc.sample_size for lc in two.levels] == defaults["sample_size"]
    one = KMeansConfig.from_dict({"n_clusters": "auto", "sample_size": [8, 3]}, n_points=12)
    assert [lc.sample_size for lc in one.levels] == [8]
    three = KMeansConfig.from_dict({"n_clusters": "auto", "sample_size": [8, 3]}, n_points=2_000_000)
    assert [lc.sample_size for lc in three.levels] == [8, 3, 3]  # the last entry extends
    # Checked before the data is known (job validation): a nominal pool.
    assert len(KMeansConfig.from_dict({"n_clusters": "auto"}).levels) == 2
    with pytest.raises(ValueError, match="'auto' or a list"):
        KMeansConfig.from_dict({"n_clusters": "many"})
    # explicit lists keep working and keep their length rule
    assert [lc.n_clusters for lc in KMeansConfig.from_dict({"n_clusters": [64, 16]}).levels] == [64, 16]
    with pytest.raises(ValueError, match="one per level"):
        KMeansConfig.from_dict({"n_clusters": [64, 16, 4], "sample_size": [8, 3]})


def test_size_warnings(caplog):
    kc = KMeansConfig.from_dict({"n_clusters": [64, 16]})
    with caplog.at_level(logging.WARNING):
        small = check_sizes(kc, 100, 128, 2)
    assert len(small) == 1 and "1.6 per cluster" in small[0] and "[20, 4]" in small[0]
    assert small[0] in caplog.text
    assert check_sizes(kc, 1_000, 128, 2) == []
    big = KMeansConfig.from_dict({"n_clusters": [10_000_000, 500_000]})
    memory = check_sizes(big, 743_000_000, 1024, 2)  # ~1.5 TB of rows per actor
    assert len(memory) == 1 and "GiB" in memory[0] and "n_splits" in memory[0]


def test_cluster_step_resolves_auto_from_the_pool_after_dedup(blob_run):
    from pipeline.artifacts import write_dedup

    run, _, _ = blob_run  # 1,200 points
    import pyarrow as pa

    dropped = [f"img{i:05d}" for i in range(0, 1200, 6)]  # 200 duplicates -> 1,000 left
    kept = [f"img{i:05d}" for i in range(1200) if i % 6]
    write_dedup(run, pa.table({"id": dropped}), pa.table({"id": kept}))
    summary = run_cluster(run, {"n_clusters": "auto", **IN_PROCESS}, drop_duplicates=True)
    assert [lv["n_clusters"] for lv in summary["levels"]] == auto_n_clusters(1_000) == [200, 40]
    assert summary["n_points"] == 1_000 and summary["n_clusters_auto"] is True
    assert summary["warnings"] == []


def test_in_process_auto_resolves_by_the_size_of_level_1_and_stays_on_actors_on_a_cluster(monkeypatch):
    from pipeline import engine
    from pipeline.kmeans.plan import AUTO_IN_PROCESS_FLOP, resolve_in_process

    cfg = {**load_group("kmeans/default"), "n_clusters": [100, 10], "n_resampling_steps": [0, 0], "n_iters": [10, 5]}
    kc = KMeansConfig.from_dict(cfg)
    assert kc.in_process == "auto"
    # Lloyd: 2 D n k iters + the final assignment; k-means++: 2 D n k trials (trials = 2 + ln 100 = 6)
    n_small = int(AUTO_IN_PROCESS_FLOP / (2 * 64 * 100 * (10 + 1 + 6))) - 100
    assert resolve_in_process(kc, n_small, 64).in_process is True
    assert resolve_in_process(kc, n_small * 2, 64).in_process is False
    assert resolve_in_process(kc, 2_000_000, 128).in_process is False  # rows > 1 GiB
    monkeypatch.setitem(engine._STATE, "cluster", True)
    assert resolve_in_process(kc, 1_000, 64).in_process is False  # a job on a cluster keeps its actors
    assert resolve_in_process(KMeansConfig.from_dict({**cfg, "in_process": True}), 10**7, 64).in_process is True
    with pytest.raises(ValueError, match="kmeans.in_process must be true, false or 'auto'"):
        KMeansConfig.from_dict({**cfg, "in_process": "maybe"})
