"""Knowing when to stop: the recall and precision of what the user exports, from a small random audit.

**Audit.** Round ``s`` (``s >= 1``): after the active batch ``B_s`` is picked, ``m_s`` audit draws are
made with replacement from the unlabeled rest ``Q_s`` (``n_s`` rows) with probabilities

    q_i = (1 - u) p_i / sum_{Q_s} p  +  u / n_s          (p: the round's head scores, u = stop.uniform_share)

and labeled together with the batch (the person cannot tell them apart). For any per-row value ``f`` the
Hansen-Hurwitz mean ``T^_s(f) = (1 / m_s) sum_j f_j / q_j`` is unbiased for ``sum_{Q_s} f`` whatever the
head, since every ``q_i >= u / n_s > 0``. Every row labeled after the draw came from ``Q_s``, so a total over
the rows still unlabeled at round ``t`` is ``T^_s(f) - sum_{S_s} f`` (``S_s``: round ``s``'s audit rows and
every row labeled after round ``s``, all labeled, so the sum is exact). The last ``stop.window`` audited
rounds are averaged with weights ``lambda_s ∝ m_s`` (fixed by the design, so the mean stays unbiased;
audits of later rounds use better heads, hence the window); rounds are independent given the past, so
``Var = sum_s lambda_s^2 Var_s``.

**Human-labeled share** (``labeled_recall_*``, :func:`estimate_recall`): ``f = y`` gives ``R^_t``, the
positives still unlabeled; with ``F`` positives labeled, ``labeled_recall = F / (F + R^)``.

**The exported set** (``exported_recall_*``, ``model_precision_*``, :func:`estimate_export`): the user
gets the ``F`` human positives plus the ``M`` unlabeled rows the final head calls positive (``c_i = 1``,
``M`` known exactly). With ``FN`` the positives it calls negative and ``FP`` the negatives it calls positive,

    exported_recall = (F + M - FP) / (F + M - FP + FN),     model_precision = (M - FP) / M

Only the errors are estimated, so a head that is nearly right gives a nearly exact estimate. Point: the
head's expected errors over the unlabeled rows, ``FN^ = sum_{c=0} p``, ``FP^ = sum_{c=1} (1 - p)``. A design-
based point (below) is unbiased too, but errors are rare: most windows draw none and it reads 0 (recall 1),
the rest read ``~n / m`` each, so a single run's error is large; the model's sum is smooth (measured in
BENCHMARKS.md, issue 30). Interval: the audit's, with ``f = y (1 - c)`` and ``f = (1 - y) c`` (design-
unbiased whatever the head: ``missed_audit``, ``false_calls_audit``), widened to hold the point. The audit
rows trained the head, whose in-sample calls are optimistic (a separable fit calls every training positive
positive, which would put the audit's ``FN`` at 0), so ``c`` of a labeled row is its **cross-fitted** call
(:func:`crossfit_scores`): the call of a head fit with that row's fold held out, i.e. the call it would
get unlabeled; unlabeled rows keep the final head's call.

**Intervals.** Each round's sample variance gets one pseudo-draw of the rare event (``z = mean 1/q`` of
the draws; the Agresti-Coull idea), so a window that drew no error does not claim zero spread. Normal
intervals ``[lo, hi]`` (clipped at 0) of ``R``, ``FN`` and ``FP`` at ``confidence`` map through the
monotone formulas above: ``recall in [F / (F + R_hi), F / (F + R_lo)]``, exported recall from
``(FP_hi, FN_hi)`` to ``(FP_lo, FN_lo)``, precision from ``FP_hi`` to ``FP_lo``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm


def audit_probabilities(scores: np.ndarray, uniform_share: float) -> np.ndarray:
    """Draw probabilities over the unlabeled rows: ``(1 - u) p / sum p + u / n`` (``NaN`` scores = unscored, 0)."""
    p = np.nan_to_num(np.clip(np.asarray(scores, dtype=np.float64), 0.0, None), nan=0.0)
    n = len(p)
    if n == 0:
        return p
    total = p.sum()
    if total <= 0 or uniform_share >= 1:
        return np.full(n, 1.0 / n)
    return (1.0 - uniform_share) * p / total + uniform_share / n


def draw_audit(
    unlabeled_rows: np.ndarray, scores: np.ndarray, m: int, uniform_share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``m`` draws with replacement: (rows (m,), their probabilities q (m,)). Label ``np.unique(rows)``."""
    unlabeled_rows = np.asarray(unlabeled_rows, dtype=np.int64)
    if m <= 0 or len(unlabeled_rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    q = audit_probabilities(scores, uniform_share)
    pick = rng.choice(len(unlabeled_rows), size=m, replace=True, p=q / q.sum())
    return unlabeled_rows[pick], q[pick]


RECALL_FIELDS = (  # per-round record fields of the human-labeled share (None before the first audit)
    "labeled_recall_est",
    "labeled_recall_lo",
    "labeled_recall_hi",
    "remaining_est",
    "remaining_lo",
    "remaining_hi",
    "audit_labeled",
    "audit_positive",
)
EXPORT_FIELDS = (  # per-round record fields of the exported set (None before the first audit)
    "exported_recall_est",
    "exported_recall_lo",
    "exported_recall_hi",
    "model_precision_est",
    "model_precision_lo",
    "model_precision_hi",
    "n_model_positive",
    "missed_est",
    "false_calls_est",
    "missed_audit",
    "false_calls_audit",
)
LEGACY_FIELDS = {  # rounds.parquet / summary.json written before issue 30 -> today's names
    "recall_est": "labeled_recall_est",
    "recall_lo": "labeled_recall_lo",
    "recall_hi": "labeled_recall_hi",
}


@dataclass(frozen=True)
class WindowTotals:
    """Audit estimates of ``k`` totals over the rows still unlabeled (each (k,)), and the draws behind them."""

    raw: np.ndarray  # unbiased, may be negative
    est: np.ndarray  # clipped at 0
    lo: np.ndarray
    hi: np.ndarray
    rounds: int  # audited rounds used (the window)
    draws: int  # draws in those rounds


def window_totals(
    rows: np.ndarray,
    values: np.ndarray,
    label_round: np.ndarray,
    audit_rows: np.ndarray,
    audit_q: np.ndarray,
    audit_round: np.ndarray,
    *,
    confidence: float = 0.95,
    window: int | None = None,
) -> WindowTotals | None:
    """``sum_{U_t} f`` for each column of ``values`` (L, k), ``f`` of the labeled ``rows`` (L,) (unique; every
    audit row among them): the windowed ``T^_s(f) - sum_{S_s} f`` of the module docstring, with normal
    intervals whose variance holds one pseudo-draw ``mean 1/q`` per column and round. None before any audit."""
    rows = np.asarray(rows, np.int64)
    values = np.asarray(values, np.float64).reshape(len(rows), -1)
    label_round = np.asarray(label_round)
    audit_rows, audit_q = np.asarray(audit_rows, np.int64), np.asarray(audit_q, np.float64)
    audit_round = np.asarray(audit_round)
    if not len(audit_rows):
        return None
    order = np.argsort(rows, kind="stable")
    at = order[np.searchsorted(rows, audit_rows, sorter=order)]  # audit draw -> its labeled row
    audited = np.unique(audit_round)
    used = audited if window is None else audited[-window:]
    k = values.shape[1]
    draws = np.array([(audit_round == s).sum() for s in used], dtype=np.float64)
    lam = draws / draws.sum()
    est, var = np.zeros((len(used), k)), np.zeros((len(used), k))
    for i, s in enumerate(used):  # a handful of window rounds; each vectorised over its draws
        mask = audit_round == s
        z = values[at[mask]] / audit_q[mask, None]
        labeled_since = (label_round > s) | np.isin(np.arange(len(rows)), at[mask])
        est[i] = z.mean(axis=0) - values[labeled_since].sum(axis=0)
        pseudo = np.vstack([z, np.full((1, k), np.mean(1.0 / audit_q[mask]))])
        var[i] = pseudo.var(axis=0, ddof=1) / len(z)
    raw = lam @ est
    half = norm.ppf(0.5 + confidence / 2) * np.sqrt(lam**2 @ var)
    return WindowTotals(
        raw=raw,
        est=np.maximum(raw, 0.0),
        lo=np.maximum(raw - half, 0.0),
        hi=np.maximum(raw + half, 0.0),
        rounds=len(used),
        draws=int(draws.sum()),
    )


@dataclass(frozen=True)
class RecallEstimate:
    """Estimated share of the pool's positives already labeled by a person, with its interval and audit counts."""

    recall_est: float | None
    recall_lo: float | None
    recall_hi: float | None
    remaining_est: float  # positives estimated still unlabeled (clipped at 0)
    remaining_raw: float  # the same before clipping: the unbiased estimate
    remaining_lo: float
    remaining_hi: float
    found: int  # positives labeled so far
    audit_rounds: int  # audited rounds used (the window)
    audit_draws: int  # draws in those rounds
    audit_labeled: int  # distinct audit rows labeled, all rounds
    audit_positive: int  # of which positive

    def as_record(self) -> dict[str, float | int | None]:
        """The :data:`RECALL_FIELDS` of a round's record."""
        d = {("labeled_" + k if k.startswith("recall") else k): v for k, v in asdict(self).items()}
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items() if k in RECALL_FIELDS}


def _ratio(num: float, den: float) -> float | None:
    return None if den <= 0 else round(min(max(num / den, 0.0), 1.0), 4)


def estimate_recall(
    rows: np.ndarray,
    labels: np.ndarray,
    label_round: np.ndarray,
    audit_rows: np.ndarray,
    audit_q: np.ndarray,
    audit_round: np.ndarray,
    *,
    confidence: float = 0.95,
    window: int | None = None,
) -> RecallEstimate | None:
    """The human-labeled share above from the labeled set (``rows, labels, label_round``, each (L,)) and every
    audit draw so far (``audit_rows, audit_q, audit_round``, each (A,); every drawn row is among ``rows``).
    None before the first audited round."""
    rows, labels = np.asarray(rows, np.int64), np.asarray(labels)
    y = (labels == 1).astype(np.float64)
    tot = window_totals(rows, y, label_round, audit_rows, audit_q, audit_round, confidence=confidence, window=window)
    if tot is None:
        return None
    found = int(y.sum())
    uniq = np.unique(np.asarray(audit_rows, np.int64))
    positive_rows = rows[labels == 1]
    point, lo, hi = float(tot.est[0]), float(tot.lo[0]), float(tot.hi[0])
    return RecallEstimate(
        recall_est=_ratio(found, found + point),
        recall_lo=_ratio(found, found + hi),
        recall_hi=_ratio(found, found + lo),
        remaining_est=point,
        remaining_raw=float(tot.raw[0]),
        remaining_lo=lo,
        remaining_hi=hi,
        found=found,
        audit_rounds=tot.rounds,
        audit_draws=tot.draws,
        audit_labeled=len(uniq),
        audit_positive=int(np.isin(uniq, positive_rows).sum()),
    )


@dataclass(frozen=True)
class ExportEstimate:
    """Estimated recall of the exported set (human + model positives) and precision of the model's calls."""

    exported_recall_est: float | None
    exported_recall_lo: float | None
    exported_recall_hi: float | None
    model_precision_est: float | None  # None when the model calls nothing
    model_precision_lo: float | None
    model_precision_hi: float | None
    n_model_positive: int  # M: unlabeled rows the head calls positive
    missed_est: float  # FN: unlabeled positives the head calls negative (the head's expected count)
    false_calls_est: float  # FP: model calls that are negative (the head's expected count)
    missed_audit: float  # FN by the audit alone (design-unbiased, unclipped)
    false_calls_audit: float  # FP by the audit alone

    def as_record(self) -> dict[str, float | int | None]:
        """The :data:`EXPORT_FIELDS` of a round's record."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k in EXPORT_FIELDS}


def estimate_export(
    rows: np.ndarray,
    labels: np.ndarray,
    label_round: np.ndarray,
    labeled_scores: np.ndarray,
    unlabeled_scores: np.ndarray,
    audit_rows: np.ndarray,
    audit_q: np.ndarray,
    audit_round: np.ndarray,
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
    window: int | None = None,
) -> ExportEstimate | None:
    """Exported recall and model precision of the module docstring.

    ``labeled_scores`` (L,): the cross-fitted score of each labeled row (rows labeled before the window's
    rounds are never read); ``unlabeled_scores`` (U,): the final head's scores of the unlabeled rows
    (``M = #(score >= threshold)``). Point: the head's expected errors ``FN = sum_{U, c=0} p``,
    ``FP = sum_{U, c=1} (1 - p)``. Interval: the audit's design-based one (valid whatever the head), widened
    to hold the point. None before the first audited round.
    """
    rows, labels = np.asarray(rows, np.int64), np.asarray(labels)
    y = labels == 1
    labeled_scores = np.asarray(labeled_scores, np.float64)
    c = labeled_scores >= threshold
    values = np.stack([y & ~c, ~y & c], axis=1).astype(np.float64)  # FN, FP per labeled row
    tot = window_totals(
        rows, values, label_round, audit_rows, audit_q, audit_round, confidence=confidence, window=window
    )
    if tot is None:
        return None
    u = np.asarray(unlabeled_scores, np.float64)
    called = u >= threshold
    f, m = float(y.sum()), int(called.sum())
    fn, fp = float(u[~called].sum()), float((1.0 - u[called]).sum())
    fn_lo, fn_hi = min(tot.lo[0], fn), max(tot.hi[0], fn)
    fp_lo, fp_hi = min(tot.lo[1], fp), min(max(tot.hi[1], fp), m)

    def recall(fp_: float, fn_: float) -> float | None:
        return _ratio(f + m - fp_, f + m - fp_ + fn_)

    return ExportEstimate(
        exported_recall_est=recall(fp, fn),
        exported_recall_lo=recall(fp_hi, fn_hi),
        exported_recall_hi=recall(fp_lo, fn_lo),
        model_precision_est=_ratio(m - fp, m),
        model_precision_lo=_ratio(m - fp_hi, m),
        model_precision_hi=_ratio(m - fp_lo, m),
        n_model_positive=m,
        missed_est=fn,
        false_calls_est=fp,
        missed_audit=float(tot.raw[0]),
        false_calls_audit=float(tot.raw[1]),
    )


def crossfit_scores(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_train: int,
    targets: np.ndarray,
    folds: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Out-of-fold scores (T,) of the training rows ``targets`` (indices into the ``n_train`` training rows).

    The targets are split into ``folds`` random folds; ``fit_predict(keep, held)`` fits a head on the training
    rows ``keep`` (bool (n_train,)) and returns its scores of ``held`` (indices), so every target is scored by
    a head that never saw its label: ``folds`` fits, each on all but ``1 / folds`` of the targets.
    """
    targets = np.asarray(targets, np.int64)
    out = np.zeros(len(targets), dtype=np.float64)
    if not len(targets):
        return out
    fold = rng.permutation(len(targets)) % max(1, min(folds, len(targets)))
    for k in np.unique(fold):  # `folds` head fits
        held = targets[fold == k]
        keep = np.ones(n_train, dtype=bool)
        keep[held] = False
        out[fold == k] = fit_predict(keep, held)
    return out
