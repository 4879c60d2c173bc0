"""``run_sample``: balanced selection over ``clusters/`` -> ``manifest.parquet``.

Manifest columns: ``id``, ``uri``, ``level_1`` .. ``level_L`` (int64 cluster id of the item at
every level), ``distance`` (float32, to its level-1 centroid), ``multiplicity`` (int32), then the
carried columns of the embeddings table. Rows are ordered by level-L, ..., level-1 cluster and
distance.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.artifacts import (
    CLUSTERS,
    MANIFEST,
    carried_columns,
    embedding_files,
    read_run_embeddings,
)
from pipeline.io.tables import write_parquet_atomic
from pipeline.kmeans.levels import load_levels, load_point_ids
from pipeline.rundir import RunDir
from pipeline.sampling.balanced import hierarchical_balanced_sampling
from pipeline.sampling.config import sampling_config
from pipeline.sampling.objectives import OBJECTIVES, resolve_selection

log = logging.getLogger(__name__)


def _carried_columns(run: RunDir, ids: pa.Array) -> pa.Table:
    """Every non-embedding column of the run's embeddings table, for the rows whose id is in ``ids``."""
    tables = []
    for f in embedding_files(run):
        with fsspec.open(f, "rb") as fh:
            pf = pq.ParquetFile(fh)
            cols = carried_columns(pf.schema_arrow.names)
            t = pf.read(columns=cols)
        tables.append(t.filter(pc.is_in(t.column("id"), value_set=ids)))
    return pa.concat_tables(tables, promote_options="default")


def item_embeddings(run: RunDir, point_ids: pa.Table) -> np.ndarray:
    """(N, D) float32 embeddings of the clustered items, row i = item index i."""
    table, x = read_run_embeddings(run, ["id"])
    pos = pc.index_in(point_ids.column("id"), value_set=table.column("id")).to_numpy(zero_copy_only=False)
    return x[pos.astype(np.int64)]


def build_manifest(
    run: RunDir,
    target_size: int,
    selection: dict,
    multiplier: int,
    seed: int,
    settings: dict,
    budget_kmeans: dict,
) -> tuple[pa.Table, int | None]:
    """Select items over the finished clusters of ``run`` and join their embeddings-table columns; also
    the level whose clusters held the budget-sized k-means (``BalancedSelection.split_level``).

    ``selection``: ``strategy`` (a key of ``OBJECTIVES``; ``auto`` is resolved by the caller),
    ``pick_level``, ``allocation_power``, ``budget_split`` (:func:`resolve_selection`); ``settings``: the
    objective's keywords; ``budget_kmeans``: ``sample.budget_kmeans`` (see
    :func:`hierarchical_balanced_sampling`).
    """
    strategy, pick_level = selection["strategy"], selection["pick_level"]
    _, levels = load_levels(run)
    point_ids = load_point_ids(run)
    needs_x = OBJECTIVES[strategy].needs_embeddings or pick_level == "budget"
    x = item_embeddings(run, point_ids) if needs_x else None
    if isinstance(pick_level, int) and pick_level > len(levels):
        raise ValueError(f"sample.pick_level={pick_level} but the run has {len(levels)} levels of clusters")
    sel = hierarchical_balanced_sampling(
        levels,
        target_size,
        strategy=strategy,
        multiplier=multiplier,
        rng=np.random.default_rng(seed),
        x=x,
        settings=settings,
        pick_level=pick_level,
        allocation_power=float(selection["allocation_power"]),
        budget_clusters={"split": selection["budget_split"], **budget_kmeans},
    )
    ids = point_ids.column("id").take(pa.array(sel.indices))
    columns: dict[str, Any] = {"id": ids}
    cluster = sel.indices
    for lv, level in enumerate(levels, start=1):
        cluster = level.assignments[cluster]
        columns[f"level_{lv}"] = pa.array(cluster, type=pa.int64())
    columns["distance"] = pa.array(levels[0].distances[sel.indices], type=pa.float32())
    columns["multiplicity"] = pa.array(sel.multiplicity, type=pa.int32())
    columns["_order"] = pa.array(np.arange(len(sel.indices)))
    table = pa.table(columns)
    carried = _carried_columns(run, ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
    extra = [c for c in carried.column_names if c != "id" and c not in table.column_names]
    table = table.join(carried.select(["id", *extra]), keys="id", join_type="left outer")
    sort_keys = [(f"level_{lv}", "ascending") for lv in range(len(levels), 0, -1)]
    table = table.sort_by([*sort_keys, ("distance", "ascending"), ("_order", "ascending")])
    first = ["id", *(["uri"] if "uri" in table.column_names else [])]
    fixed = [*(f"level_{lv}" for lv in range(1, len(levels) + 1)), "distance", "multiplicity"]
    rest = [c for c in table.column_names if c not in (*first, *fixed, "_order")]
    return table.select([*first, *fixed, *rest]), sel.split_level


def run_sample(run: RunDir, cfg: dict, *, force: bool = False, seed: int | None = None) -> dict:
    """Hierarchical balanced sampling of ``run``'s clusters into the manifest.

    ``cfg``: ``target_size`` (int, counting repeats), ``strategy`` (a selection objective or
    ``auto``), ``pick_level``, ``allocation_power``, ``multiplier`` (int >= 1), ``seed``, the
    objectives' settings. Returns counts and timing, with ``strategy`` (as asked) and ``objective``,
    ``pick_level``, ``allocation_power`` (as run: ``auto`` resolved) for run.json.
    """
    cfg = sampling_config(cfg)
    target = int(cfg["target_size"])
    strategy = str(cfg["strategy"])
    multiplier = int(cfg["multiplier"])
    seed = int(cfg["seed"] if seed is None else seed)
    config = {"target_size": target, "strategy": strategy, "multiplier": multiplier, "seed": seed}
    if strategy == "auto":  # settings that change the picks; a fixed objective's earlier runs stay valid
        config.update(typical=cfg["typical"], auto=cfg["auto"], budget_kmeans=cfg["budget_kmeans"])
    else:
        if strategy == "typical":
            config.update(typical=cfg["typical"])
        if cfg["pick_level"] != 1 or float(cfg["allocation_power"]) != 0:
            config.update(pick_level=cfg["pick_level"], allocation_power=float(cfg["allocation_power"]))
        if cfg["pick_level"] == "budget":
            config.update(budget_split=cfg["budget_split"], budget_kmeans=cfg["budget_kmeans"])
    with run.step("sample", config, inputs=[CLUSTERS], force=force) as step:
        if step.skipped:
            return {**step.result, "skipped": True}
        t0 = time.perf_counter()
        n_items = load_point_ids(run).num_rows
        chosen = resolve_selection(cfg, target, n_items)
        objective, pick_level, power = chosen["strategy"], chosen["pick_level"], float(chosen["allocation_power"])
        settings = {"typical": cfg["typical"]}.get(objective, {})
        log.info(
            "sample: objective %s in level-%s clusters (split %s), allocation power %g (strategy=%s, %d of %d items)",
            objective,
            pick_level,
            chosen["budget_split"],
            power,
            strategy,
            target,
            n_items,
        )
        table, split_level = build_manifest(run, target, chosen, multiplier, seed, settings, cfg["budget_kmeans"])
        write_parquet_atomic(table, run.path(MANIFEST))
        step.result = {
            "strategy": strategy,
            "objective": objective,
            "pick_level": pick_level,
            "allocation_power": power,
            "budget_split": chosen["budget_split"] if pick_level == "budget" else None,
            "split_level": split_level,
            "target_size": target,
            "n_rows": table.num_rows,
            "n_selected": int(pc.sum(table.column("multiplicity")).as_py() or 0),
            "n_clusters_level_1": int(pc.count_distinct(table.column("level_1")).as_py()),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    return step.result
