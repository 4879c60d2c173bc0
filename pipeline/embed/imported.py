"""The ``embed`` step for embeddings made elsewhere: import them instead of embedding images.

Writes the same artifacts as the image embedding step (``embeddings/part-*.parquet`` with ``id``,
``embedding`` and the carried columns; ``rejects.parquet``), so every later step reads them
unchanged. The step's fingerprint covers the input files' listing (and the id file's), so a changed
input recomputes the import and everything after it.

With a ``uri`` column, the import also takes each image's copy signatures
(:data:`pipeline.artifacts.SIGNATURE_COLUMNS`: one decode per image, null where a uri does not load
or decode) so that dedup opens no image: in this process for small inputs, else on Ray Data tasks
(``embed.engine`` / ``embed.local_max_images`` choose, as for the embedding step; neither is part of
the fingerprint).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS, PIXEL_HASH, REJECTS, input_fingerprint
from pipeline.dedup.hashing import SignatureStage
from pipeline.embed.config import EmbedConfig
from pipeline.engine import engine_for
from pipeline.io.embeddings import EmbeddingsInput, check_embeddings_input, iter_embeddings
from pipeline.io.sources import InputConfig
from pipeline.io.tables import write_parquet_atomic
from pipeline.progress import Progress
from pipeline.rundir import INPUT, RunDir

log = logging.getLogger(__name__)

ID_FILE = "input_ids"  # input-fingerprint key of input.id_path
SIGNATURE_BLOCK = 1024  # uris per signature task (one Ray Data block; one progress update in process)


def import_embeddings(
    run: RunDir, input_cfg: dict, embed_cfg: dict | None = None, *, force: bool = False
) -> dict[str, Any]:
    """Check, convert and write the embeddings of ``input_cfg``; returns the step's counts.

    Columns and types are checked from the schemas before the step starts (one-line ValueError).
    ``read == kept + rejected``; ``id_type`` and ``embedding_type`` record the input's own types;
    ``signatures`` counts the kept rows whose ``uri`` gave copy signatures and those whose did not,
    and names where they were taken (absent without a ``uri`` column). ``embed_cfg``: where the
    signatures are taken (``engine``, ``local_max_images``, ``cpus_per_actor``).
    """
    cfg = InputConfig.from_dict(input_cfg)
    ecfg = EmbedConfig.from_dict(embed_cfg)
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
        signatures = _SignatureTaker(run, spec, cfg, ecfg) if "uri" in spec.carried else None
        with run.staging(EMBEDDINGS) as out_dir:
            run.fs.makedirs(out_dir, exist_ok=True)
            for i, (good, bad) in enumerate(iter_embeddings(cfg, spec)):
                read += good.num_rows + bad.num_rows
                if bad.num_rows:
                    rejects.append(bad)
                if good.num_rows:
                    if signatures is not None:
                        good = signatures(good)
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
            **({"signatures": signatures.close()} if signatures is not None else {}),
            "seconds": seconds,
            "rows_per_second": round(read / max(seconds, 1e-9), 2),
        }
        log.info("embed (imported): %s", step.result)
    return step.result


class _SignatureTaker:
    """Adds the copy signatures of the images at ``uri`` to the import's batches: one
    :class:`SignatureStage` per ``SIGNATURE_BLOCK`` uris, in this process or as Ray Data tasks
    (:func:`pipeline.engine.engine_for` over the input's row count, read from the Parquet
    footers; each task asks for ``embed.cpus_per_actor``), with the ``embed/signatures`` progress
    in ``run``'s log."""

    def __init__(self, run: RunDir, spec: EmbeddingsInput, cfg: InputConfig, ecfg: EmbedConfig):
        total = _parquet_rows(spec.files)
        total = total if cfg.limit is None else min(total, int(cfg.limit))
        self.engine = engine_for(ecfg.engine, total, ecfg.local_max_images, what="embed")
        self.cpus = float(ecfg.cpus_per_actor)
        self.bar = Progress("embed/signatures", total, run=run, unit="img", min_interval=0.5, log_interval=10.0)
        self.decoded = self.missing = 0
        log.info("embed (imported): copy signatures of %d uris on %s", total, self.engine.name)

    def __call__(self, good: pa.Table) -> pa.Table:
        uris = good.select(["uri"]).append_column("_row", pa.array(np.arange(good.num_rows, dtype=np.int64)))
        blocks = [uris.slice(a, SIGNATURE_BLOCK) for a in range(0, good.num_rows, SIGNATURE_BLOCK)]
        parts = {"local": self._here, "ray": self._on_ray}[self.engine.name](blocks)
        sig = pa.concat_tables(parts).sort_by("_row").drop_columns(["uri", "_row"])
        missing = sig.column(PIXEL_HASH).null_count
        self.decoded, self.missing = self.decoded + good.num_rows - missing, self.missing + missing
        out = good.drop_columns([c for c in sig.column_names if c in good.column_names])
        for name in sig.column_names:
            out = out.append_column(name, sig.column(name))
        return out

    def _here(self, blocks: list[pa.Table]) -> list[pa.Table]:
        stage, parts = SignatureStage(), []
        for block in blocks:
            parts.append(stage(block))
            self.bar.update(block.num_rows)
        return parts

    def _on_ray(self, blocks: list[pa.Table]) -> list[pa.Table]:
        self.engine.start()
        import ray

        ds = ray.data.from_arrow(blocks).map_batches(
            _signature_block, batch_size=None, batch_format="pyarrow", num_cpus=self.cpus
        )
        parts = []
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            parts.append(batch)
            self.bar.update(batch.num_rows)
        return parts

    def close(self) -> dict[str, int | str]:
        self.bar.close()
        return {"decoded": self.decoded, "undecodable": self.missing, "engine": self.engine.name}


def _signature_block(block: pa.Table) -> pa.Table:
    """One Ray Data task's block: :class:`SignatureStage` holds no state worth an actor."""
    return SignatureStage()(block)


def _parquet_rows(files: list[str]) -> int:
    """Rows of the Parquet ``files`` from their footers."""
    total = 0
    for f in files:
        with fsspec.open(f, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total
