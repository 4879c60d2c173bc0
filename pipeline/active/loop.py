"""The active-labeling loop: seed set, then rounds of train head -> score pool -> select -> label.

    round 0   label the seed set (starters' nearest neighbours + random images)
    round r   fit the head on every labeled image (warm start), score the pool, estimate from the
              audits so far (``stop.audit_size > 0``) the human-labeled share of the positives and
              the exported set's recall and model precision (cross-fitted calls of the labeled rows),
              stop if the labeled share reached the budget, fewer than ``min_change`` predictions
              flipped or the exported set reached ``stop.recall`` (and ``stop.precision``), else
              pick ``batch_size`` unlabeled images (strategy, then diversity) plus
              ``stop.audit_size`` random audit draws (:mod:`pipeline.active.stopping`) and label
              them together

One round is ``update`` (refit, score, cross-fitted export estimate) -> ``audit_and_stop`` (the audits'
estimates, the stop rules) -> ``pick_round`` (``select_batch``: strategy then diversity, plus the audit
draws) -> ``label_batch`` -> ``write_round`` (history, ``on_round``, checkpoint); ``prepare`` checks the
inputs and labels the seed set.

State is checkpointed after every labeled batch (and the picked batch before it is sent to the
labeler), so a crash anywhere resumes at the same round with the same picks. Randomness of round
``r`` comes from ``default_rng([seed, r])``, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipeline.active.config import ActiveConfig
from pipeline.active.diversity import diverse_select
from pipeline.active.heads import Head, build_head
from pipeline.active.labelers import Labeler
from pipeline.active.metrics import run_metrics
from pipeline.active.seed import pool_index, seed_set
from pipeline.active.stopping import (
    EXPORT_FIELDS,
    RECALL_FIELDS,
    ExportEstimate,
    crossfit_scores,
    draw_audit,
    estimate_export,
    estimate_recall,
)
from pipeline.active.strategies import priority, top_k

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Everything needed to continue: labeled rows, their labels and round, the head, the last predictions."""

    rows: np.ndarray  # (L,) int64 pool rows, in labeling order
    labels: np.ndarray  # (L,) int8: 1 / 0 / -1 (unsure)
    label_round: np.ndarray  # (L,) int32: 0 = starters and seed set
    round: int  # last finished round
    head: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: np.ndarray | None = None  # (N,) bool predictions of the last head
    history: list[dict[str, Any]] = field(default_factory=list)
    subsample: np.ndarray | None = None  # scale.enabled: the scored coreset rows
    audit_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (A,) audit draws
    audit_q: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # (A,) their draw probabilities
    audit_round: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (A,) round of each draw
    # (L,) the head's score of each labeled row when it was picked (NaN: picked without a head, or resumed
    # from a checkpoint written before the field): out-of-sample scores that calibrate the export estimate
    label_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))


class Checkpoint(Protocol):
    def load(self) -> LoopState | None: ...
    def save(self, state: LoopState) -> None: ...
    def load_pending(self, round: int) -> np.ndarray | None: ...
    def save_pending(self, round: int, rows: np.ndarray) -> None: ...
    def load_audit(self, round: int) -> tuple[np.ndarray, np.ndarray] | None: ...
    def save_audit(self, round: int, rows: np.ndarray, q: np.ndarray) -> None: ...


@dataclass
class LoopResult:
    state: LoopState
    head: Head
    probs: np.ndarray  # (N,) final positive probabilities over the pool
    predicted: np.ndarray  # (N,) bool, probs >= threshold
    stop_reason: str


@dataclass
class Pool:
    """The loop's fixed inputs, checked once by :func:`prepare`."""

    x: np.ndarray  # (N, D) float32 pool embeddings
    extra: np.ndarray  # (S, D) starter vectors from outside the pool (positive training points)
    ids: list[str]  # (N,) the labeler's names of the pool rows
    budget_n: int  # floor(budget * N): labels allowed in all
    truth: np.ndarray | None  # (N,) bool, evaluation only
    index: Any = None  # pool_index(x, ids) when the seed set or scale.enabled needs it


@dataclass
class RoundScores:
    """What :func:`update` learned in one round: the head's scores, the exported set's estimate, the record."""

    probs: np.ndarray  # (M,) positive probabilities of the scored rows
    scored: np.ndarray | None  # (M,) rows of ``probs`` (scale.enabled), None = the whole pool
    predicted: np.ndarray  # (M,) bool, probs >= threshold
    full_probs: np.ndarray | None  # (N,) over the whole pool, when an audit or the truth needs them
    exported: ExportEstimate | None
    record: dict[str, Any]
    scored_at: float  # perf_counter when scoring ended (the selection's clock starts there)


def _batch_name(r: int) -> str:
    return "active-seed" if r == 0 else f"active-round-{r:04d}"


def run_loop(
    x: np.ndarray,
    labeler: Labeler,
    cfg: ActiveConfig,
    *,
    ids: Sequence[str] | None = None,
    starter_rows: Sequence[int] = (),
    starter_vectors: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    checkpoint: Checkpoint | None = None,
    index=None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
) -> LoopResult:
    """Run (or resume) the loop on the pool ``x`` (N, D).

    Starters: ``starter_rows`` (pool rows, labeled positive) and/or ``starter_vectors`` (S, D)
    from outside the pool (used as positive training points and seed queries). ``truth`` (N,)
    bool adds the evaluation measures of :mod:`pipeline.active.metrics` to every round's record.
    """
    pool, state, head = prepare(x, labeler, cfg, ids, starter_rows, starter_vectors, truth, checkpoint, index)
    while True:
        r = state.round + 1
        scores = update(pool, state, head, cfg, r)
        stop = audit_and_stop(pool, state, scores, cfg)
        if stop[0] is not None:
            return _finish(pool, state, head, scores, cfg, stop, checkpoint, on_round)
        pending, audit = pick_round(pool, state, head, scores, cfg, r, checkpoint)
        label_batch(pool, labeler, state, head, pending, audit, cfg, r)
        write_round(state, head, scores, checkpoint, on_round)


def prepare(
    x: np.ndarray,
    labeler: Labeler,
    cfg: ActiveConfig,
    ids: Sequence[str] | None,
    starter_rows: Sequence[int],
    starter_vectors: np.ndarray | None,
    truth: np.ndarray | None,
    checkpoint: Checkpoint | None,
    index=None,
) -> tuple[Pool, LoopState, Head]:
    """Check the inputs, build the head and resume from ``checkpoint`` or label the seed set (round 0)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    if x.ndim != 2 or n == 0:
        raise ValueError(f"pool embeddings must be a non-empty (N, D) array, got {x.shape}")
    starter_rows = np.asarray(starter_rows, dtype=np.int64)
    extra = (
        np.zeros((0, x.shape[1]), np.float32)
        if starter_vectors is None
        else np.atleast_2d(np.asarray(starter_vectors, np.float32))
    )
    if len(starter_rows) == 0 and len(extra) == 0:
        raise ValueError("give at least one starter (a pool row or an image vector)")
    if extra.shape[1] != x.shape[1]:
        raise ValueError(f"starter vectors have dimension {extra.shape[1]}, the pool {x.shape[1]}")
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
    pool = Pool(x, extra, ids, int(np.floor(cfg.budget * n)), truth, index)
    head = build_head(cfg.head, seed=cfg.seed)
    if cfg.head.get("standardize", False):
        head.set_feature_stats(x.mean(axis=0), x.std(axis=0))
    state = checkpoint.load() if checkpoint is not None else None
    if state is None:
        state = _seed_round(pool, labeler, cfg, starter_rows, checkpoint)
    elif state.head:
        head.load_state(state.head)
    if cfg.scale.enabled and pool.index is None:
        pool.index = pool_index(x, ids)
    return pool, state, head


def _seed_round(
    pool: Pool, labeler: Labeler, cfg: ActiveConfig, starter_rows: np.ndarray, checkpoint: Checkpoint | None
) -> LoopState:
    """Round 0: the starters (positive) plus their seed set (:func:`pipeline.active.seed.seed_set`), labeled."""
    if pool.index is None:
        pool.index = pool_index(pool.x, pool.ids)
    queries = np.concatenate([pool.x[starter_rows], pool.extra])
    rng = np.random.default_rng([cfg.seed, 0])
    seeds = seed_set(pool.index, queries, cfg.n_neighbors, cfg.n_random, rng, exclude_rows=starter_rows)
    pending = checkpoint.load_pending(0) if checkpoint is not None else None
    pending = seeds.rows if pending is None else pending
    if checkpoint is not None:
        checkpoint.save_pending(0, pending)
    seed_labels = labeler.label(pending, [pool.ids[i] for i in pending], _batch_name(0))
    rows = np.concatenate([starter_rows, pending])
    labels = np.concatenate([np.ones(len(starter_rows), np.int8), np.asarray(seed_labels, np.int8)])
    state = LoopState(rows=rows, labels=labels, label_round=np.zeros(len(rows), np.int32), round=0)
    if cfg.scale.enabled:
        state.subsample = _scored_coreset(pool.x, cfg)
    if checkpoint is not None:
        checkpoint.save(state)
    return state


def update(pool: Pool, state: LoopState, head: Head, cfg: ActiveConfig, r: int) -> RoundScores:
    """Refit the head on every labeled image (warm start), score the pool (or the scored coreset) and, with
    ``stop.audit_size``, the exported set's estimate from cross-fitted scores (:func:`_estimate_export`)."""
    t0 = time.perf_counter()
    train = state.labels >= 0
    head.fit(
        np.concatenate([pool.x[state.rows[train]], pool.extra]),
        np.concatenate([state.labels[train], np.ones(len(pool.extra), np.int8)]),
    )
    t1 = time.perf_counter()
    scored = state.subsample if cfg.scale.enabled else None
    probs = head.predict_proba(pool.x if scored is None else pool.x[scored])
    predicted = probs >= cfg.threshold
    t2 = time.perf_counter()
    changed = (
        None
        if state.predicted is None or len(state.predicted) != len(predicted)
        else float((state.predicted != predicted).mean())
    )
    record: dict[str, Any] = {
        "round": state.round,
        "n_labeled": len(state.rows),
        "n_positive_labeled": int((state.labels == 1).sum()),
        "changed_share": changed,
        "train_seconds": round(t1 - t0, 4),
        "score_seconds": round(t2 - t1, 4),
    }
    full_probs = None
    if cfg.stop.audit_size > 0 or pool.truth is not None:
        full_probs = probs if scored is None else head.predict_proba(pool.x)
    exported = None
    if cfg.stop.audit_size > 0:
        folds = np.random.default_rng([cfg.seed, r, 2])
        exported = _estimate_export(pool.x, pool.extra, state, head, full_probs, cfg, rng_folds=folds)
    return RoundScores(probs, scored, predicted, full_probs, exported, record, t2)


def audit_and_stop(
    pool: Pool, state: LoopState, scores: RoundScores, cfg: ActiveConfig
) -> tuple[str | None, str | None]:
    """Add the audits' estimates (and, with the truth, the evaluation measures) to the round's record, then
    (reason, rule) when the loop stops: the budget, ``min_change``, ``max_rounds`` or :func:`stop_rule`."""
    record = scores.record
    if cfg.stop.audit_size > 0:
        estimate = estimate_recall(
            state.rows,
            state.labels,
            state.label_round,
            state.audit_rows,
            state.audit_q,
            state.audit_round,
            confidence=cfg.stop.confidence,
            window=cfg.stop.window,
        )
        record.update(estimate.as_record() if estimate is not None else dict.fromkeys(RECALL_FIELDS))
        exported = scores.exported
        record.update(exported.as_record() if exported is not None else dict.fromkeys(EXPORT_FIELDS))
        record["crossfit_seconds"] = round(time.perf_counter() - scores.scored_at, 4)
    if pool.truth is not None:
        full = scores.full_probs >= cfg.threshold
        record.update(run_metrics(pool.truth, state.rows, state.labels, full))
    changed = record["changed_share"]
    limits = (
        ("budget", len(state.rows) >= pool.budget_n),
        ("converged", cfg.min_change > 0 and changed is not None and changed < cfg.min_change),
        ("max_rounds", cfg.max_rounds is not None and state.round >= cfg.max_rounds),
    )
    reached = next((reason for reason, hit in limits if hit), None)
    if reached is not None or scores.exported is None:
        return reached, None
    return stop_rule(scores.exported, cfg)


def pick_round(
    pool: Pool, state: LoopState, head: Head, scores: RoundScores, cfg: ActiveConfig, r: int, checkpoint
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Round ``r``'s rows to label: the batch (:func:`select_batch`) then the audit draws not in it, and the
    draws (rows, probabilities); a checkpointed pick is reused, so a resumed round asks for the same rows."""
    n_labeled = len(state.rows)
    k = min(cfg.batch_size, pool.budget_n - n_labeled)
    pending = checkpoint.load_pending(r) if checkpoint is not None else None
    audit = checkpoint.load_audit(r) if checkpoint is not None and pending is not None else None
    if pending is None:
        rng = np.random.default_rng([cfg.seed, r])
        batch = select_batch(
            pool.x, scores.probs, state, cfg, k, rng, scored=scores.scored, head=head, index=pool.index
        )
        m = min(cfg.stop.audit_size, pool.budget_n - n_labeled - k)
        audit = _audit(len(pool.x), scores.probs, scores.scored, state, batch, m, cfg, r)
        pending = np.concatenate([batch, np.setdiff1d(np.unique(audit[0]), batch)])
        if checkpoint is not None:
            checkpoint.save_audit(r, *audit)
            checkpoint.save_pending(r, pending)
    elif audit is None:
        audit = (np.zeros(0, np.int64), np.zeros(0, np.float64))
    crossfit = scores.record.get("crossfit_seconds", 0.0)
    scores.record["select_seconds"] = round(time.perf_counter() - scores.scored_at - crossfit, 4)
    return pending, audit


def label_batch(
    pool: Pool,
    labeler: Labeler,
    state: LoopState,
    head: Head,
    pending: np.ndarray,
    audit: tuple[np.ndarray, np.ndarray],
    cfg: ActiveConfig,
    r: int,
) -> None:
    """Ask ``labeler`` for ``pending`` and append the answers, the head's scores of the rows (out of sample:
    it never saw them) and the audit draws to ``state``, which then holds round ``r``."""
    names = [pool.ids[i] for i in pending]
    pending_scores = head.predict_proba(pool.x[pending])
    if (guess := getattr(labeler, "guess", None)) is not None:  # grid pages pre-marked with the head's call
        guess(names, pending_scores >= cfg.threshold)
    new_labels = np.asarray(labeler.label(pending, names, _batch_name(r)), np.int8)
    known = _label_scores(state, len(state.rows))
    state.rows = np.concatenate([state.rows, pending])
    state.labels = np.concatenate([state.labels, new_labels])
    state.label_round = np.concatenate([state.label_round, np.full(len(pending), r, np.int32)])
    state.label_score = np.concatenate([known, pending_scores.astype(np.float64)])
    state.audit_rows = np.concatenate([state.audit_rows, audit[0]])
    state.audit_q = np.concatenate([state.audit_q, audit[1]])
    state.audit_round = np.concatenate([state.audit_round, np.full(len(audit[0]), r, np.int32)])
    state.round = r


def write_round(
    state: LoopState,
    head: Head,
    scores: RoundScores,
    checkpoint: Checkpoint | None,
    on_round: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Record the round: head weights and predictions into ``state``, its record into the history and to
    ``on_round``, then the checkpoint."""
    state.head, state.predicted = head.state(), scores.predicted
    state.history.append(scores.record)
    if on_round is not None:
        on_round(scores.record)
    if checkpoint is not None:
        checkpoint.save(state)


def _finish(
    pool: Pool,
    state: LoopState,
    head: Head,
    scores: RoundScores,
    cfg: ActiveConfig,
    stop: tuple[str, str | None],
    checkpoint: Checkpoint | None,
    on_round: Callable[[dict[str, Any]], None] | None,
) -> LoopResult:
    """The last round (no batch): its record with the stop reason, and the head's calls over the whole pool."""
    reason, rule = stop
    scores.record["stop_reason"], scores.record["stop_rule"] = reason, rule
    scores.record["select_seconds"] = 0.0
    write_round(state, head, scores, checkpoint, on_round)
    full_probs = scores.full_probs
    if full_probs is None:
        full_probs = scores.probs if scores.scored is None else head.predict_proba(pool.x)
    rule_text = f": {rule}" if rule else ""
    log.info("active: stopped (%s%s) after round %d with %d labeled", reason, rule_text, state.round, len(state.rows))
    return LoopResult(state, head, full_probs, full_probs >= cfg.threshold, reason)


def _label_scores(state: LoopState, n: int) -> np.ndarray:
    """``state.label_score`` of the first ``n`` labeled rows, NaN where none was recorded."""
    known = state.label_score[:n]
    return np.concatenate([known, np.full(n - len(known), np.nan)])


def stop_rule(exported: ExportEstimate, cfg: ActiveConfig) -> tuple[str | None, str | None]:
    """(reason, rule that fired) once every set target of the exported set is reached, else (None, None).

    ``stop.recall`` applies to the exported recall, ``stop.precision`` to the model's precision; ``stop.rule``
    reads each at its point estimate (``point``) or its interval's lower bound (``lower``).
    """
    key = "lo" if cfg.stop.rule == "lower" else "est"
    targets = {"recall": ("exported_recall", cfg.stop.recall), "precision": ("model_precision", cfg.stop.precision)}
    checks = []
    for name, (field_name, target) in targets.items():
        if target is None:
            continue
        value = getattr(exported, f"{field_name}_{key}")
        if name == "precision" and exported.n_model_positive == 0:
            value = 1.0  # no model call: nothing in the export is wrong
        if value is None or value < target:
            return None, None
        checks.append((name, f"{field_name}_{key} {value:.3f} >= {target}"))
    if not checks:
        return None, None
    return "+".join(n for n, _ in checks), ", ".join(c for _, c in checks)


def _estimate_export(
    x: np.ndarray,
    extra: np.ndarray,
    state: LoopState,
    head: Head,
    probs: np.ndarray,
    cfg: ActiveConfig,
    rng_folds: np.random.Generator,
) -> ExportEstimate | None:
    """The exported set's estimate (:func:`pipeline.active.stopping.estimate_export`) for ``head``, fitted on
    ``state``'s labels; ``probs`` (N,) its scores over the pool. Rows labeled in the window's rounds get
    cross-fitted scores (``stop.folds`` heads, each fit without one fold of them; a convex head warm-starts
    from the fitted one, as its optimum does not depend on the start); the others keep the head's scores."""
    if not len(state.audit_round):
        return None
    audited = np.unique(state.audit_round)
    first = (audited if cfg.stop.window is None else audited[-cfg.stop.window :])[0]
    train = state.labels >= 0
    xt = np.concatenate([x[state.rows[train]], extra])
    yt = np.concatenate([state.labels[train], np.ones(len(extra), np.int8)])
    position = np.cumsum(train) - 1  # labeled row -> its training row
    picked_score = _label_scores(state, len(state.rows))
    unscored = ~np.isfinite(picked_score)
    window_rows = state.label_round >= first
    targets = np.flatnonzero(train & (window_rows | unscored))

    def fit_predict(keep: np.ndarray, held: np.ndarray) -> np.ndarray:
        fold_head = build_head(cfg.head, seed=cfg.seed)
        fold_head.mean, fold_head.scale = head.mean, head.scale
        if fold_head.convex:
            fold_head.load_state(head.state())
        fold_head.fit(xt[keep], yt[keep])
        return fold_head.predict_proba(xt[held])

    labeled_scores = probs[state.rows].astype(np.float64)
    labeled_scores[targets] = crossfit_scores(fit_predict, len(xt), position[targets], cfg.stop.folds, rng_folds)
    # calibration: each labeled row of the window (or never scored) at its out-of-sample score
    calibration = np.where(unscored, labeled_scores, picked_score)
    calibration[~(train & (window_rows | unscored))] = np.nan
    unlabeled = np.ones(len(x), dtype=bool)
    unlabeled[state.rows] = False
    return estimate_export(
        state.rows,
        state.labels,
        state.label_round,
        labeled_scores,
        probs[unlabeled],
        state.audit_rows,
        state.audit_q,
        state.audit_round,
        threshold=cfg.threshold,
        confidence=cfg.stop.confidence,
        window=cfg.stop.window,
        calibration_scores=calibration,
        calibration_ridge=cfg.stop.calibration_ridge,
    )


def select_batch(
    x: np.ndarray,
    probs: np.ndarray,
    state: LoopState,
    cfg: ActiveConfig,
    k: int,
    rng: np.random.Generator,
    *,
    scored: np.ndarray | None = None,
    head: Head | None = None,
    index=None,
) -> np.ndarray:
    """``k`` unlabeled pool rows: strategy priority -> top candidates -> diversity.

    ``scored`` (rows of ``probs``; None = the whole pool) with ``cfg.scale.enabled``: the best
    candidates of the scored coreset are expanded to their ``scale.neighbors`` nearest pool rows,
    which are scored too before the final choice.
    """
    rows = np.arange(len(x)) if scored is None else scored
    labeled = np.zeros(len(x), dtype=bool)
    labeled[state.rows] = True
    u = priority(cfg.strategy, probs, rng, cfg)
    u = np.where(labeled[rows], -np.inf, u)
    m = k if cfg.diversity == "none" else cfg.candidate_factor * k
    cand = rows[top_k(u, m)]
    if scored is not None:
        nbrs, _ = index.search_rows(x[cand], cfg.scale.neighbors)
        pool = np.unique(np.concatenate([cand, nbrs.reshape(-1)]))
        pool = pool[(pool >= 0) & ~labeled[pool]]
        u_pool = priority(cfg.strategy, head.predict_proba(x[pool]), rng, cfg)
        cand = pool[top_k(u_pool, m)]
    cand = cand[~labeled[cand]]
    if cfg.diversity == "none":
        return cand[:k].astype(np.int64)
    # Diversity sees the candidates' priority ranks (best first), which every strategy shares.
    u_cand = np.arange(len(cand), 0, -1, dtype=np.float64)
    picks = diverse_select(
        cfg.diversity, x[cand], u_cand, k, cfg, labeled_x=x[state.rows], seed=int(rng.integers(2**31))
    )
    return cand[picks].astype(np.int64)


def _audit(
    n: int,
    probs: np.ndarray,
    scored: np.ndarray | None,
    state: LoopState,
    batch: np.ndarray,
    m: int,
    cfg: ActiveConfig,
    r: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Round ``r``'s audit draws (rows, probabilities) from the pool left unlabeled by ``state`` and ``batch``.

    Scores come from the round's head; with ``scale.enabled`` unscored rows get the uniform share only.
    Its own generator (``[seed, r, 1]``), so the audit never shifts the batch's randomness.
    """
    if m <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    scores = np.full(n, np.nan)
    scores[np.arange(n) if scored is None else scored] = probs
    unlabeled = np.ones(n, dtype=bool)
    unlabeled[state.rows] = False
    unlabeled[batch] = False
    rows = np.flatnonzero(unlabeled)
    rng = np.random.default_rng([cfg.seed, r, 1])
    return draw_audit(rows, scores[rows], m, cfg.stop.uniform_share, rng)


def _scored_coreset(x: np.ndarray, cfg: ActiveConfig) -> np.ndarray:
    """Rows of a k-center coreset with ``scale.fraction`` of the pool (sorted)."""
    from pipeline.config import load_group
    from pipeline.coreset.kcenter import stratified_k_center

    m = max(1, int(round(cfg.scale.fraction * len(x))))
    if m >= len(x):
        return np.arange(len(x), dtype=np.int64)
    # the coreset step's stratified settings, with this loop's own candidate sample and radius estimate
    stratified = {
        **load_group("coreset/default")["stratified"],
        "sample_size": cfg.scale.sample_size,
        "radius_sample": 1024,
    }
    picks, _ = stratified_k_center(x, m, **stratified, metric="cosine", device="cpu", seed=cfg.seed)
    return np.sort(picks)
