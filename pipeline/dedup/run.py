"""``strata dedup``: exact duplicates, near-duplicates (copies) and, optionally, semantic redundancy.

Reads ``<run>/embeddings``, writes ``<run>/dedup/duplicates.parquet`` (``id``, ``kept_id``,
``similarity``, ``kind`` in {exact, near_duplicate, semantic}, ``distance``) and
``<run>/dedup/kept.parquet`` (``id``): every input id is in exactly one of them, every ``kept_id``
is kept. ``pipeline.kmeans.run_cluster`` drops the duplicate ids.

- exact: identical decoded pixels (``similarity`` 1, ``distance`` 0);
- near_duplicate: the same picture re-encoded, resized, cropped, flipped, rotated or colour-shifted
  (:mod:`pipeline.dedup.copies`): ``distance`` = copy distance in pHash bits, ``similarity`` =
  1 - distance / 64; the threshold is calibrated on the collection (:mod:`pipeline.dedup.calibration`);
- semantic (off by default): different photos with alike embeddings (:mod:`pipeline.dedup.semantic`),
  ``similarity`` = cosine, ``distance`` = 1 - cosine.

Embeddings made elsewhere without a ``uri`` column (``input.format=embeddings``, any modality) have
no pixels: exact then means bit-identical vectors, near_duplicate is skipped with the reason recorded
(``skipped`` in the step's counts), and semantic works as usual.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.artifacts import EMBEDDINGS, read_run_embeddings, read_run_signatures, write_dedup
from pipeline.dedup.config import dedup_config
from pipeline.dedup.hashing import (
    PIXEL_HASH,
    SIGNATURE_COLUMNS,
    Signatures,
    concat_signatures,
    image_signatures,
    load_images,
    read_signatures,
    uri_signatures,
)
from pipeline.dedup.semantic import exact_duplicates, keep_priority, semantic_duplicates
from pipeline.engine import BY_NAME
from pipeline.progress import Progress
from pipeline.rundir import RunDir

log = logging.getLogger(__name__)

KINDS = ("kept", "exact", "near_duplicate", "semantic")  # kind codes 0..3
COUNTS = ("input", "kept", "duplicates", *KINDS[1:])
HASH_CHUNK = 4096  # images decoded and hashed between two progress updates
SEMANTIC_BATCH_ROWS = 65536  # rows (whole clusters) compared between two progress updates


def _progress(name: str, total: int, run: RunDir | None) -> Progress:
    """A pass's progress in images, appended to ``run``'s ``progress.log`` (silent without a run)."""
    return Progress(name, total, run=run, unit="img", log_interval=10.0, **({} if run else {"stream": None}))


def semantic_in_batches(
    x: np.ndarray, assignments: np.ndarray, eps: float, priority: np.ndarray, *, block: int, bar: Progress
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`semantic_duplicates` over batches of whole clusters (about ``SEMANTIC_BATCH_ROWS`` rows
    each; pairs are only compared inside a cluster, so the result is the same), reporting the rows
    done to ``bar`` after each batch."""
    n = len(x)
    kept_of, similarity = np.arange(n, dtype=np.int64), np.ones(n, dtype=np.float32)
    order = np.argsort(assignments, kind="stable")
    bounds = np.flatnonzero(np.diff(assignments[order])) + 1
    starts = np.concatenate([[0], bounds])  # cut at the first cluster start past each batch's size
    at = np.searchsorted(starts, np.arange(SEMANTIC_BATCH_ROWS, n, SEMANTIC_BATCH_ROWS))
    for members in np.split(order, np.unique(starts[at[at < len(starts)]])):
        rows = np.sort(members)
        local_kept, local_sim = semantic_duplicates(x[rows], assignments[rows], eps, priority[rows], block=block)
        kept_of[rows], similarity[rows] = rows[local_kept], local_sim
        bar.update(len(rows))
    return kept_of, similarity


@dataclass
class Duplicates:
    """Per row: ``kept_of`` (N,) int64 representative row (itself when kept), ``similarity`` and
    ``distance`` (N,) float32 to it, ``kind`` (N,) int8 index into :data:`KINDS`; ``calibration``:
    how the copy threshold was set (None when near_duplicate is off)."""

    kept_of: np.ndarray
    similarity: np.ndarray
    distance: np.ndarray
    kind: np.ndarray
    calibration: dict | None = field(default=None)


def _remove(out: Duplicates, rows: np.ndarray, local_kept: np.ndarray, sim: np.ndarray, dist: np.ndarray, code: int):
    """Record a stage's removals over the subset ``rows``; rows that pointed at a newly removed row
    follow it to its keeper (and take its kind), so every representative stays a kept row."""
    removed = local_kept != np.arange(len(rows))
    r = rows[removed]
    out.kept_of[r], out.similarity[r], out.distance[r], out.kind[r] = rows[local_kept[removed]], sim[removed], dist[removed], code  # fmt: skip
    moved = np.flatnonzero((out.kind > 0) & (out.kind != code) & (out.kind[out.kept_of] == code))
    keeper = out.kept_of[moved]
    out.similarity[moved], out.distance[moved], out.kind[moved] = out.similarity[keeper], out.distance[keeper], code
    out.kept_of[moved] = out.kept_of[keeper]


def near_duplicates(
    sig: Signatures, priority: np.ndarray, cfg: dict, load: Callable[[np.ndarray], Sequence[bytes | None]] | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Copies among the rows of ``sig`` (all decodable), grouped without chaining in ``priority`` order.

    Candidates (:func:`pipeline.dedup.candidates.candidate_pairs`) are verified by their pHash copy
    distance and registered residual (:func:`pipeline.dedup.copies.copy_scores`), combined as
    :func:`pipeline.dedup.calibration.joint_rank` against a threshold calibrated on synthetic copies
    (:mod:`pipeline.dedup.calibration`; near-flat images it cannot verify are kept, its detail gate);
    with a fixed ``threshold``, the residual alone is compared. Groups by :func:`pipeline.dedup.grouping.keeper_groups`.

    Args:
        cfg: ``dedup.copies`` settings and ``seed``.
        load: encoded bytes of the given rows, for the calibration's synthetic copies (needed when
            ``cfg["threshold"]`` is None).

    Returns:
        (kept_of (n,) int64 local row of the representative, distance (n,) int64 pHash copy bits to
        it, record: threshold, calibration estimates, candidate counts, timings).
    """
    from pipeline.dedup.candidates import candidate_pairs
    from pipeline.dedup.copies import copy_scores, descriptor_correlation, sharded_copy_scores
    from pipeline.dedup.grouping import keeper_groups
    from pipeline.dedup.perceptual import d4_phash, descriptors

    n = len(sig.grids)
    fixed = cfg["threshold"]
    t0 = time.perf_counter()
    hashes = sig.phash if sig.phash is not None else d4_phash(sig.grids)  # stored by the embed step
    desc = descriptors(sig.grids)
    record: dict = {}
    i, j = candidate_pairs(hashes, desc, cfg, record)
    t1 = time.perf_counter()
    min_corr = cfg["register_min_correlation"]
    if fixed is None:  # synthetic copies: their scores set the threshold, their descriptors who gets registered
        if load is None:
            raise ValueError("calibrating dedup.copies.threshold needs the images; or set dedup.copies.threshold")
        synth = _synthetic_copies(sig, hashes, desc, cfg, load)
        min_corr = synth["min_corr"] if min_corr is None else min_corr
    min_corr = -1.0 if min_corr is None else float(min_corr)
    register = descriptor_correlation(desc, i, j) >= min_corr
    record.update(
        candidate_pairs=int(len(i)),
        registered_pairs=int(register.sum()),
        register_min_correlation=round(min_corr, 4),
        search_s=round(t1 - t0, 2),
    )

    def group(
        limit: float, pair_score: Callable, verifiable: np.ndarray, scored: dict
    ) -> tuple[np.ndarray, np.ndarray]:
        """keeper_groups with pairs of verifiable images at ``pair_score <= limit``, the candidate pairs
        scored in ``scored`` (bits, residual, crop scales); pairs verified on demand are scored once
        (no per-pair Python)."""
        asked = scored["asked"]

        def verify(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            key = np.asarray(a, np.int64) * n + np.asarray(b, np.int64)
            new = np.setdiff1d(key, asked["key"])
            if len(new):
                na, nb = np.divmod(new, n)
                reg = descriptor_correlation(desc, na, nb) >= min_corr
                nbits, nres = copy_scores(hashes, sig.grids, na, nb, register=reg, scales=scored["scales"])
                keys = np.concatenate([asked["key"], new])
                order = np.argsort(keys)
                asked["key"] = keys[order]
                asked["bits"] = np.concatenate([asked["bits"], nbits])[order]
                asked["residual"] = np.concatenate([asked["residual"], nres])[order]
            at = np.searchsorted(asked["key"], key)
            return pair_score(asked["bits"][at], asked["residual"][at]) <= limit, asked["bits"][at]

        bits, residual = scored["bits"], scored["residual"]
        link = (pair_score(bits, residual) <= limit) & verifiable[i] & verifiable[j]
        return keeper_groups(n, i[link], j[link], bits[link], priority, verify)

    def scored_with(scales: tuple[float, ...]) -> dict:
        t2 = time.perf_counter()
        bits, residual = sharded_copy_scores(
            hashes, sig.grids, i, j, register, scales=scales, engine=BY_NAME[record["engine"]]
        )
        # pairs verified on demand, scored once: sorted keys a * n + b with their bits and residual
        asked = {"key": np.zeros(0, np.int64), "bits": np.zeros(0, np.int64), "residual": np.zeros(0, np.float32)}
        return {"scales": scales, "bits": bits, "residual": residual, "asked": asked, "s": time.perf_counter() - t2}

    grids_tried = [tuple(float(v) for v in g) for g in cfg["crop_scales"]]
    if fixed is not None:
        pair_score, verifiable = (lambda b, res: res), np.ones(n, bool)  # a fixed threshold is a residual
        scored = scored_with(grids_tried[0])
        record.update(threshold=float(fixed), calibrated=False, reliable=True, verify_s=round(scored["s"], 2))
    else:
        scored, pair_score, verifiable = _calibrate(sig.grids, synth, grids_tried, cfg, group, scored_with, record)
    limit = record["threshold"] if record["threshold"] is not None else -np.inf
    kept_of, dist = group(limit, pair_score, verifiable, scored)
    return kept_of, dist.astype(np.int64), record


def _synthetic_copies(
    sig: Signatures, hashes: np.ndarray, desc: np.ndarray, cfg: dict, load: Callable[[np.ndarray], Sequence]
) -> dict:
    """A seeded sample of ``calibration_sample`` rows and one synthetic copy of each (kinds in turn):
    ``sample`` (m,), ``kinds`` (m,), ``grids`` (n + m, ...) pool then copies, ``copies`` (m,) their
    rows, ``copy_hashes``, and ``min_corr``: the lowest copy-to-original descriptor correlation
    minus ``register_margin`` (who gets registered)."""
    from pipeline.dedup.calibration import KINDS as COPY_KINDS
    from pipeline.dedup.calibration import synthetic_copy
    from pipeline.dedup.copies import descriptor_correlation
    from pipeline.dedup.perceptual import d4_phash, descriptors
    from pipeline.io.images import decode_rgb

    n = len(sig.grids)
    rng = np.random.default_rng(int(cfg["seed"]))
    sample = np.sort(rng.choice(n, size=min(int(cfg["calibration_sample"]), n), replace=False))
    kinds = np.array([COPY_KINDS[k % len(COPY_KINDS)] for k in range(len(sample))])
    blobs = [synthetic_copy(decode_rgb(b), k, rng) for b, k in zip(load(sample), kinds)]
    grids = np.concatenate([sig.grids, image_signatures(blobs).grids])
    copies = n + np.arange(len(sample))
    copy_hashes = np.concatenate([hashes, d4_phash(grids[n:])])
    copy_corr = descriptor_correlation(np.concatenate([desc, descriptors(grids[n:])]), sample, copies)
    min_corr = float(copy_corr.min()) - float(cfg["register_margin"]) if len(copy_corr) else -1.0
    return dict(sample=sample, kinds=kinds, grids=grids, copies=copies, copy_hashes=copy_hashes, min_corr=min_corr)


def _calibrate(
    pool_grids: np.ndarray,
    synth: dict,
    grids_tried: list[tuple[float, ...]],
    cfg: dict,
    group: Callable,
    scored_with: Callable[[tuple[float, ...]], dict],
    record: dict,
) -> tuple[dict, Callable, np.ndarray]:
    """The copy threshold from the synthetic copies (:func:`pipeline.dedup.calibration.gated_threshold`),
    trying finer crop grids only while crops are recalled below ``retry_crop_recall``; records the
    estimates in ``record``. Returns (the chosen pair scores, the pair score function, verifiable rows)."""
    from pipeline.dedup.calibration import KINDS as COPY_KINDS
    from pipeline.dedup.calibration import gated_threshold, grid_detail
    from pipeline.dedup.copies import copy_scores

    n, sample, kinds, grids = len(pool_grids), synth["sample"], synth["kinds"], synth["grids"]
    pool_detail = grid_detail(pool_grids)
    copy_detail = np.minimum(pool_detail[sample], grid_detail(grids[n:]))
    best = None
    for scales in grids_tried:
        cur = scored_with(scales)
        copy_bits, copy_res = copy_scores(synth["copy_hashes"], grids, sample, synth["copies"], scales=scales)
        est, score, ok, copy_score = gated_threshold(
            copy_bits,
            copy_res,
            copy_detail,
            pool_detail,
            lambda t, sc, v: group(t, sc, v, cur)[0],  # noqa: B023 (used in this iteration)
            detail_levels=list(cfg["detail_levels"]),
            recall_levels=list(cfg["recall_levels"]),
            max_false_match=float(cfg["max_false_match"]),
        )
        t = est["threshold"] if est["threshold"] is not None else -np.inf
        by_kind = {k: round(float((copy_score[kinds == k] <= t).mean()), 3) for k in COPY_KINDS}
        if best is None or (est["reliable"] and est["recall_estimate"] > best[1]["recall_estimate"]):
            best = (cur, est, score, ok, by_kind)
        if best[4]["crop"] >= float(cfg["retry_crop_recall"]):
            break
    scored, est, pair_score, verifiable, by_kind = best
    record.update(
        calibrated=True,
        sample=int(len(sample)),
        **est,
        recall_by_kind=by_kind,
        crop_scales=list(scored["scales"]),
        verify_s=round(scored["s"], 2),
    )
    if not est["reliable"]:
        log.warning(
            "dedup: copy detection unreliable on this collection (strictest setting removes %.1f%% of distinct "
            "images > max_false_match %.1f%%): near-duplicates kept",
            100 * est["false_match_rate"],
            100 * float(cfg["max_false_match"]),
        )
    elif est["unverifiable"]:
        log.info("dedup: %d near-flat images too plain to verify copies of: kept", est["unverifiable"])
    return scored, pair_score, verifiable


def find_duplicates(
    x: np.ndarray | None,
    cfg: dict,
    *,
    pixel_hashes: Sequence[str | None] | None = None,
    signatures: Signatures | None = None,
    load: Callable[[np.ndarray], Sequence[bytes | None]] | None = None,
    run: RunDir | None = None,
) -> Duplicates:
    """Exact, then near-duplicate, then (when enabled) semantic duplicates.

    Args:
        x: (N, D) embeddings (used by ``semantic`` and ``keep: centroid`` only; may be None otherwise).
        pixel_hashes: (N,) exact keys; default ``signatures.digests``.
        signatures: decoded-pixel signatures (:func:`pipeline.dedup.hashing.image_signatures`), needed by
            near_duplicate and ``keep: largest`` (without them, largest keeps input order).
        load: encoded bytes of given rows, for the copy calibration.
        run: run whose ``progress.log`` receives the copy and semantic passes' progress (``img``).
    """
    c = dedup_config(cfg)
    n = len(x) if x is not None else len(signatures.grids) if signatures is not None else len(pixel_hashes or [])
    out = Duplicates(
        np.arange(n, dtype=np.int64), np.ones(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int8)
    )
    if n == 0:
        return out
    assignments = distances = None
    if c["semantic"] or c["keep"] == "centroid":
        from pipeline.kmeans.algorithm import kmeans

        k = min(int(c["n_clusters"] or max(1, math.ceil(n / c["points_per_cluster"]))), n)
        # kmeans normalises its input in place for the cosine metric: hand it a copy.
        _, assignments, distances = kmeans(
            np.array(x, np.float32), k, c["n_iters"], init="kmeans++", metric="cosine", seed=c["seed"]
        )
    pixels = signatures.pixels if signatures is not None else None
    priority = keep_priority(n, c["keep"], centroid_distance=distances, pixels=pixels, seed=c["seed"])
    hashes = pixel_hashes if pixel_hashes is not None else signatures.digests if signatures is not None else None
    if c["exact"] and hashes is not None:
        dup, kept = exact_duplicates(list(hashes), priority)
        out.kept_of[dup], out.kind[dup] = kept, 1
    if c["near_duplicate"]:
        if signatures is None:
            raise ValueError("near_duplicate dedup needs the images' signatures (decoded pixels)")
        rest = np.flatnonzero((out.kind == 0) & (signatures.pixels > 0))
        phash = None if signatures.phash is None else signatures.phash[rest]
        sub = Signatures([signatures.digests[r] for r in rest], signatures.grids[rest], signatures.pixels[rest], phash)
        with _progress("dedup/copies", len(rest), run) as bar:
            local_kept, dist, out.calibration = near_duplicates(
                sub,
                priority[rest],
                {**c["copies"], "seed": c["seed"]},
                None if load is None else lambda r: load(rest[r]),
            )
            bar.update(len(rest), threshold=out.calibration["threshold"], reliable=out.calibration["reliable"])
        _remove(out, rest, local_kept, 1 - dist / 64.0, dist.astype(np.float32), 2)
    if c["semantic"]:
        rest = np.flatnonzero(out.kind == 0)
        with _progress("dedup/semantic", len(rest), run) as bar:
            local_kept, sim = semantic_in_batches(
                x[rest], assignments[rest], float(c["eps"]), priority[rest], block=c["block"], bar=bar
            )
        _remove(out, rest, local_kept, sim, 1 - sim, 3)
    return out


def signatures_of(
    table: pa.Table, *, decode: bool, run: RunDir | None = None
) -> tuple[list[str | None] | None, Signatures | None]:
    """(pixel hashes, signatures) of an embeddings table.

    The copy signatures the embed (or import) step stored with the embeddings
    (:data:`pipeline.artifacts.SIGNATURE_COLUMNS`, in ``table`` or, for the same ids in the same
    order, in ``run``'s embeddings) are read as they are: no image is opened. Embeddings without them (run directories made before they were stored, tables written by other
    tools) fall back to the ``pixel_hash`` column when present, and to decoding ``uri`` when
    ``decode`` (or when there is no pixel_hash column), ``HASH_CHUNK`` images at a time with their
    progress (``dedup/hash``) in ``run``'s log."""
    stored = read_signatures(table)
    if stored is None and run is not None and "id" in table.column_names:
        columns = read_run_signatures(run)
        if columns is not None and columns.column("id").equals(table.column("id")):
            stored = read_signatures(columns)
    if stored is not None:
        return stored.digests, stored
    hashes = table.column(PIXEL_HASH).to_pylist() if PIXEL_HASH in table.column_names else None
    if not decode and hashes is not None:
        return hashes, None
    if "uri" not in table.column_names:
        raise KeyError("dedup needs a 'uri' column (or, for exact dedup alone, 'pixel_hash') in the embeddings table")
    uris = table.column("uri").to_pylist()
    log.warning(
        "dedup: the embeddings carry no copy signatures (%s); decoding %d images from 'uri' "
        "(a fresh embed step stores them: `force=true` or a new run directory)",
        ", ".join(c for c in SIGNATURE_COLUMNS if c not in table.column_names) or "other types",
        len(uris),
    )
    parts = []
    with _progress("dedup/hash", len(uris), run) as bar:
        for a in range(0, len(uris), HASH_CHUNK):
            parts.append(uri_signatures(uris[a : a + HASH_CHUNK]))
            bar.update(len(parts[-1].digests))
    sig = concat_signatures(parts)
    return hashes if hashes is not None else sig.digests, sig


def vector_keys(x: np.ndarray) -> list[int]:
    """(N,) exact-duplicate keys of embedding rows: equal keys <=> bit-identical float32 vectors
    (the exact kind when there are no pixels to compare)."""
    rows = np.ascontiguousarray(x, dtype=np.float32)
    _, keys = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel(), return_inverse=True)
    return keys.ravel().tolist()


def run_dedup(run: RunDir, cfg: dict, *, force: bool = False) -> dict:
    """Find duplicates in ``run``'s embeddings; write ``dedup/``; return ``COUNTS``.

    The step's record (marker, run.json) adds timings, the settings that decide the result and the
    copy calibration (threshold, sample size, estimated recall and false-match rate)."""
    c = dedup_config(cfg)
    with run.step("dedup", c, inputs=[EMBEDDINGS], force=force) as step:
        if step.skipped:
            return {k: step.result[k] for k in COUNTS}
        t0 = time.perf_counter()
        table, x = read_run_embeddings(run)
        skipped: dict[str, str] = {}
        images = "uri" in table.column_names or PIXEL_HASH in table.column_names
        if not images and c["near_duplicate"]:  # embeddings made elsewhere, without pictures
            skipped["near_duplicate"] = (
                "no images: the embeddings have no 'uri' column (copy detection compares pixels)"
            )
            c = {**c, "near_duplicate": False}
        need = c["exact"] or c["near_duplicate"]
        if images:
            hashes, sig = signatures_of(table, decode=c["near_duplicate"], run=run) if need else (None, None)
        else:
            hashes, sig = (vector_keys(x) if c["exact"] else None), None
        t_decode = time.perf_counter() - t0
        uris = table.column("uri").to_pylist() if "uri" in table.column_names else []
        found = find_duplicates(
            x, c, pixel_hashes=hashes, signatures=sig, load=lambda rows: load_images([uris[r] for r in rows]), run=run
        )
        ids = table.column("id").combine_chunks()
        dup = np.flatnonzero(found.kind > 0)
        kept = np.flatnonzero(found.kind == 0)
        if len(kept) + len(dup) != len(ids) or (found.kind[found.kept_of[dup]] != 0).any():
            raise AssertionError("dedup accounting broken: every row must be kept or point at a kept row")
        duplicates = pa.table(
            {
                "id": ids.take(pa.array(dup)),
                "kept_id": ids.take(pa.array(found.kept_of[dup])),
                "similarity": pa.array(found.similarity[dup], pa.float32()),
                "kind": pa.array([KINDS[k] for k in found.kind[dup]], pa.string()),
                "distance": pa.array(found.distance[dup], pa.float32()),
            }
        )
        write_dedup(run, duplicates, pa.table({"id": ids.take(pa.array(kept))}))
        counts = {
            "input": len(ids),
            "kept": int(len(kept)),
            "duplicates": int(len(dup)),
            **{name: int((found.kind == code).sum()) for code, name in enumerate(KINDS) if code},
        }
        step.result = {
            **counts,
            "decode_s": round(t_decode, 2),
            "total_s": round(time.perf_counter() - t0, 2),
            "keep": c["keep"],
            "copies": found.calibration,
            "semantic_eps": c["eps"] if c["semantic"] else None,
            "exact_by": ("pixels" if images else "embedding") if c["exact"] else None,
            "skipped": skipped,
        }
        log.info("dedup: %s; copies: %s", counts, found.calibration)
    return counts
