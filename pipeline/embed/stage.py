"""The embedding stage on Ray Data, and the ``embed`` step that writes ``embeddings/``."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import EMBEDDINGS, PRETRAIN, PRETRAIN_CHECKPOINT, REJECTS, TMP, input_fingerprint
from pipeline.dedup.hashing import collect_signatures, with_signatures
from pipeline.embed.embedder import EmbedConfig, Embedder
from pipeline.embed.reduce import reduce_run_embeddings
from pipeline.engine import engine_for
from pipeline.io.images import RejectedImage
from pipeline.io.sources import InputConfig, iter_images, list_units, read_images
from pipeline.io.tables import EMBEDDING, embeddings_to_arrow, list_parquet_files
from pipeline.progress import Progress
from pipeline.rundir import INPUT, RunDir
from pipeline.stage import Resources, Stage

log = logging.getLogger(__name__)

REJECT_REASON = "reject_reason"


class EmbedStage(Stage):
    """Decode + resize + normalise + forward. Input rows: ``id, uri, image, _read_error, *carried``.
    Output rows: the same minus ``image``/``_read_error``, plus the copy signatures of the decoded
    image (:data:`pipeline.dedup.hashing.SIGNATURE_COLUMNS`, when ``embed.pixel_hash``; null for
    rejected rows), ``embedding`` (``fixed_size_list<float32>[D]``; zeros for rejected rows) and
    ``reject_reason`` (null if kept). The signatures come from the same decode as the embedding,
    so dedup never decodes the collection again."""

    name = "embed"
    inputs = ("id", "uri", "image")
    outputs = ("id", EMBEDDING, REJECT_REASON)

    def __init__(self, cfg: dict | EmbedConfig, preprocess: list[tuple[type, dict]] | None = None):
        self.cfg = cfg if isinstance(cfg, EmbedConfig) else EmbedConfig.from_dict(cfg)
        self.resources = Resources(cpus=self.cfg.cpus_per_actor, gpus=self.cfg.gpus_per_actor)
        self.batch_size = self.cfg.batch_size
        self.preprocess_specs = list(preprocess or [])

    def setup(self) -> None:
        self.embedder = Embedder(self.cfg)
        self.preprocess = [cls(**kwargs) for cls, kwargs in self.preprocess_specs]

    def process(self, batch: pa.Table) -> pa.Table:
        for stage in self.preprocess:  # image-bytes stages (gap fill, cloud mask, tiling) run in this actor
            batch = stage(batch)
        images = batch.column("image").to_pylist()
        read_errors = (
            batch.column("_read_error").to_pylist() if "_read_error" in batch.column_names else [None] * len(images)
        )
        reasons: list[str | None] = []
        signatures: list[tuple[str, np.ndarray, int] | None] = []
        pixels = []
        for data, err in zip(images, read_errors):
            signature = None
            if err:
                reasons.append(err)
            else:
                try:
                    if self.cfg.pixel_hash:
                        arr, signature = self.embedder.decode_with_signature(data)
                    else:
                        arr = self.embedder.decode(data)
                    pixels.append(arr)
                    reasons.append(None)
                except RejectedImage as exc:
                    reasons.append(exc.reason)
            signatures.append(signature)
        emb = np.zeros((len(images), self.embedder.dim), np.float32)
        if pixels:
            ok = np.array([r is None for r in reasons])
            emb[ok] = self.embedder.embed_arrays(np.stack(pixels))
        out = batch.drop_columns([c for c in ("image", "_read_error") if c in batch.column_names])
        if self.cfg.pixel_hash:
            out = with_signatures(out, collect_signatures(signatures))
        return out.append_column(EMBEDDING, embeddings_to_arrow(emb)).append_column(
            REJECT_REASON, pa.array(reasons, pa.string())
        )


def embed_dataset(ds, cfg: EmbedConfig, preprocess: list[tuple[type, dict]] | None = None):
    """Attach the embedding actor pool (with any preprocessing stages fused in) to a Ray Dataset.

    Preprocessing stages run inside the embedding actors rather than as pools of their own: on
    small nodes every extra actor pool holds CPU that the read and write tasks then lack.
    """
    import ray

    return ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={"cfg": cfg, "preprocess": preprocess or []},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
        # Ray Data restarts dead actors and retries their batches by default (max_restarts=-1).
        # A fixed pool: Ray Data's autoscaler keeps one actor when the CPU budget is tight.
        compute=ray.data.ActorPoolStrategy(min_size=cfg.pool_size, max_size=cfg.pool_size),
    )


def run_embed(
    run: RunDir,
    input_cfg: dict,
    embed_cfg: dict,
    *,
    preprocess: list[tuple[type, dict]] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Read -> (preprocess) -> embed every input image; write ``embeddings/`` and ``rejects.parquet``.

    Every input row ends in exactly one of the two (``kept + rejected == read``). Skipped when the
    ``embed`` step finished with the same input files (listing) and the same input/embed config.
    Embeddings made elsewhere (``input.format=embeddings``) are imported instead (:mod:`.imported`).
    ``embed.engine`` picks Ray Data or this process (:func:`embed_local`, small inputs): same rows,
    same order, same vectors.
    """
    from pipeline.embed.imported import import_embeddings
    from pipeline.io.embeddings import is_embeddings_input

    if is_embeddings_input(input_cfg):
        if embed_cfg.get("dim") is not None:
            raise ValueError(
                "embed.dim reduces embeddings made here from images; input.format=embeddings keeps its width"
            )
        return import_embeddings(run, input_cfg, embed_cfg, force=force)
    from pipeline.ssl.store import resolve_store_checkpoint

    embed_cfg = resolve_store_checkpoint(
        embed_cfg, input_cfg, log, run
    )  # embed.store: checkpoint at the input's resolution
    input_config = InputConfig.from_dict(input_cfg)
    config = {
        "input": {k: v for k, v in input_cfg.items() if k != "path"},
        "embed": {k: v for k, v in embed_cfg.items() if k not in WHERE_NOT_WHAT},
        "preprocess": [(c.__module__ + "." + c.__name__, k) for c, k in preprocess or []],
    }
    inputs = {INPUT: input_fingerprint(input_config.resolved_path)}
    checkpoint = str(embed_cfg.get("checkpoint") or "")
    if checkpoint.startswith(run.path(PRETRAIN)):  # a backbone trained in this run: its step is an input
        inputs.update(run.input_fingerprints([PRETRAIN_CHECKPOINT]))
    with run.step("embed", config, inputs, force=force) as step:
        if step.skipped:
            return step.result
        cfg = EmbedConfig.from_dict(embed_cfg)
        t0 = time.time()
        n_images = count_images(input_config)
        engine = engine_for(cfg.engine, n_images, cfg.local_max_images, what="embed")
        log.info("embed: %s images on %s", "?" if n_images is None else n_images, _ENGINE_NAMES[engine.name])
        staged = run.path(TMP, f"embed-{uuid.uuid4().hex[:8]}")
        bar = Progress("embed", n_images, run=run, unit="img", **_PACE)
        try:
            engine.start()
            EMBED_ON[engine.name](input_config, cfg, staged, bar, preprocess)
            counts = _split_kept_and_rejected(run, staged)
            counts.update(reduce_run_embeddings(run, cfg))  # embed.dim
        finally:
            run.fs.rm(run.local(TMP), recursive=True)
        counts["engine"] = engine.name
        counts["seconds"] = round(time.time() - t0, 2)
        counts["images_per_second"] = round(counts["read"] / max(counts["seconds"], 1e-9), 2)
        step.result = counts
        log.info("embed: %s", counts)
    return counts


# Settings that choose where the step runs, not what it writes: left out of its fingerprint, so
# switching engines reuses a finished step (and run directories made before they existed stay valid).
WHERE_NOT_WHAT = ("engine", "local_max_images")

_ENGINE_NAMES = {"local": "this process (embed.engine=local)", "ray": "Ray Data actors (embed.engine=ray)"}


def local_threads(cfg: EmbedConfig) -> int:
    """Torch threads of the in-process path: the Ray path's total (``pool_size x num_threads``)."""
    return max(1, int(cfg.pool_size) * max(1, int(cfg.num_threads or 1)))


def embed_local(
    input_config: InputConfig,
    cfg: EmbedConfig,
    out_dir: str,
    bar: Progress,
    preprocess: list[tuple[type, dict]] | None = None,
) -> int:
    """The embed stage in this process: the same reader units, batches and :class:`EmbedStage` as
    the Ray path, one Parquet file per read unit (in input order) under ``out_dir``; returns rows."""
    import torch

    from pipeline.io.tables import write_parquet_atomic

    threads = local_threads(cfg)
    stage = EmbedStage(EmbedConfig.from_dict({**vars(cfg), "num_threads": threads}), preprocess)
    previous = torch.get_num_threads()
    rows = 0
    try:
        for i, unit in enumerate(iter_images(input_config)):
            parts = []
            for j in range(0, unit.num_rows, cfg.batch_size):
                parts.append(stage(unit.slice(j, cfg.batch_size)))
                bar.update(parts[-1].num_rows)
            table = pa.concat_tables(parts)
            write_parquet_atomic(table, f"{out_dir}/part-{i:06d}.parquet")
            rows += table.num_rows
    finally:
        torch.set_num_threads(previous)
        bar.close()
    return rows


def embed_on_ray(
    input_config: InputConfig,
    cfg: EmbedConfig,
    out_dir: str,
    bar: Progress,
    preprocess: list[tuple[type, dict]] | None = None,
) -> None:
    """The embed stage on a Ray Data actor pool (:func:`embed_dataset`), rows in input order, written
    as Parquet under ``out_dir``; the progress follows the written files."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # same input -> same row order -> same manifest
    ds = embed_dataset(read_images(input_config), cfg, preprocess)
    with _WrittenRows(out_dir, bar):
        ds.write_parquet(out_dir, ray_remote_args={"num_cpus": 0.25})


# The embed step's body on each engine (pipeline.engine.engine_for chooses): same rows, order, vectors.
EMBED_ON = {"local": embed_local, "ray": embed_on_ray}


def count_images(cfg: InputConfig) -> int | None:
    """Number of images the input holds, from the driver-side listing (None for tar shards,
    whose members are only known once read)."""
    units = list_units(cfg)
    total = 0
    for kind, names, rows in zip(*(units.column(c).to_pylist() for c in ("kind", "names", "rows"))):
        if kind == "folder":
            total += len(names)
        elif kind == "parquet":
            total += int(rows.rsplit(":", 1)[1])
        else:
            return None
    return total if cfg.limit is None else min(total, int(cfg.limit))


# A redraw every half second on a terminal; a logged line (progress.log, `ray job logs`) every 10 s.
_PACE = {"min_interval": 0.5, "log_interval": 10.0}


class _WrittenRows:
    """Follows a Ray Data write from the driver: a thread polls the output folder and reports the
    rows of every finished Parquet file (footer only) to ``bar``; the final line when the write ends.

    Counting what is written (not what an actor embedded) counts every image once, even when Ray
    Data retries the batches of a lost actor.
    """

    def __init__(self, folder: str, bar: Progress, poll_seconds: float = 1.0):
        self.folder, self.bar, self.poll_seconds = folder, bar, poll_seconds
        self._rows: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="embed-progress", daemon=True)

    def poll(self) -> int:
        """Rows in the finished files so far (a file still being written is skipped until complete)."""
        try:
            files = list_parquet_files(self.folder)
        except FileNotFoundError:
            return 0
        for f in files:
            if f not in self._rows:
                try:
                    with fsspec.open(f, "rb") as fh:
                        self._rows[f] = pq.ParquetFile(fh).metadata.num_rows
                except (OSError, pa.ArrowInvalid):
                    continue
        return sum(self._rows.values())

    def _report(self) -> None:
        written = self.poll()
        if written > self.bar.done:
            self.bar.update(written - self.bar.done)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._report()

    def __enter__(self) -> _WrittenRows:
        self._thread.start()
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self._report()
        self.bar.close()


def _split_kept_and_rejected(run: RunDir, staged: str) -> dict[str, int]:
    """Stream the staged shards (in order) into ``embeddings/part-*.parquet`` and ``rejects.parquet``."""
    read = kept = 0
    rejects: list[pa.Table] = []
    dim = None
    with run.staging(EMBEDDINGS) as out_dir:
        run.fs.makedirs(out_dir, exist_ok=True)
        for i, f in enumerate(list_parquet_files(staged)):
            table = pq.read_table(f)
            read += table.num_rows
            ok = pa.compute.is_null(table.column(REJECT_REASON))
            good = table.filter(ok).drop_columns([REJECT_REASON])
            bad = table.filter(pa.compute.invert(ok))
            if bad.num_rows:
                rejects.append(bad.select(["id", "uri", REJECT_REASON]).rename_columns(["id", "uri", "reason"]))
            if good.num_rows:
                dim = good.schema.field(EMBEDDING).type.list_size
                with run.fs.open(f"{out_dir}/part-{i:05d}.parquet", "wb") as fh:
                    pq.write_table(good, fh)
                kept += good.num_rows
    empty = pa.table(
        {"id": pa.array([], pa.string()), "uri": pa.array([], pa.string()), "reason": pa.array([], pa.string())}
    )
    rejected_table = pa.concat_tables(rejects) if rejects else empty
    from pipeline.io.tables import write_parquet_atomic

    write_parquet_atomic(rejected_table, run.path(REJECTS))
    if kept + rejected_table.num_rows != read:
        raise RuntimeError(f"accounting error: kept {kept} + rejected {rejected_table.num_rows} != read {read}")
    reasons = {}
    if rejected_table.num_rows:
        for r in rejected_table.column("reason").to_pylist():
            key = r.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    return {"read": read, "kept": kept, "rejected": rejected_table.num_rows, "reject_reasons": reasons, "dim": dim}
