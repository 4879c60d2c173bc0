"""The ``embed`` step for embeddings made elsewhere: import them instead of embedding images.

Writes the same artifacts as the image embedding step (``embeddings/part-*.parquet`` with ``id``,
``embedding`` and the carried columns; ``rejects.parquet``), so every later step reads them
unchanged. The step's fingerprint covers the input files' listing (and the id file's), so a changed
input recomputes the import and everything after it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS, REJECTS, input_fingerprint
from pipeline.io.embeddings import check_embeddings_input, iter_embeddings
from pipeline.io.sources import InputConfig
from pipeline.io.tables import write_parquet_atomic
from pipeline.rundir import INPUT, RunDir

log = logging.getLogger(__name__)

ID_FILE = "input_ids"  # input-fingerprint key of input.id_path


def import_embeddings(run: RunDir, input_cfg: dict, *, force: bool = False) -> dict[str, Any]:
    """Check, convert and write the embeddings of ``input_cfg``; returns the step's counts.

    Columns and types are checked from the schemas before the step starts (one-line ValueError).
    ``read == kept + rejected``; ``id_type`` and ``embedding_type`` record the input's own types.
    """
    cfg = InputConfig.from_dict(input_cfg)
    spec = check_embeddings_input(cfg)
    config = {"input": {k: v for k, v in input_cfg.items() if k not in ("path", "id_path")}, "import": "embeddings"}
    inputs = {INPUT: input_fingerprint(cfg.resolved_path)}
    if cfg.id_path:
        inputs[ID_FILE] = input_fingerprint(cfg.id_path)
    with run.step("embed", config, inputs, force=force) as step:
        if step.skipped:
            return step.result
        t0 = time.time()
        read = kept = 0
        dim = spec.dim
        rejects: list[pa.Table] = []
        with run.staging(EMBEDDINGS) as out_dir:
            run.fs.makedirs(out_dir, exist_ok=True)
            for i, (good, bad) in enumerate(iter_embeddings(cfg, spec)):
                read += good.num_rows + bad.num_rows
                if bad.num_rows:
                    rejects.append(bad)
                if good.num_rows:
                    dim = good.schema.field("embedding").type.list_size
                    with run.fs.open(f"{out_dir}/part-{i:05d}.parquet", "wb") as fh:
                        pq.write_table(good, fh)
                    kept += good.num_rows
            if not kept:
                raise ValueError(f"input.path={cfg.resolved_path}: no usable vector among {read} rows")
        rejected = (
            pa.concat_tables(rejects)
            if rejects
            else pa.table({k: pa.array([], pa.string()) for k in ("id", "uri", "reason")})
        )
        write_parquet_atomic(rejected, run.path(REJECTS))
        reasons: dict[str, int] = {}
        for r in rejected.column("reason").to_pylist():
            reasons[r.split(":")[0]] = reasons.get(r.split(":")[0], 0) + 1
        seconds = round(time.time() - t0, 2)
        step.result = {
            "read": read,
            "kept": kept,
            "rejected": rejected.num_rows,
            "reject_reasons": reasons,
            "dim": dim,
            **spec.record(cfg),
            "seconds": seconds,
            "rows_per_second": round(read / max(seconds, 1e-9), 2),
        }
        log.info("embed (imported): %s", step.result)
    return step.result
