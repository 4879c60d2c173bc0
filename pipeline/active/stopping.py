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

Only the errors are estimated, so a head that is nearly right gives a nearly exact estimate.

**Point: the head's expected errors, recalibrated on the labels.** The head's scores are often not
probabilities (an overconfident head puts missed positives at ``p ~ 1e-3``; AID-30 in BENCHMARKS.md), so the
sums use ``g(p) = sigmoid(a logit(p) + b)`` (Platt), fitted (:func:`fit_calibration`, ridge toward the identity)
on every labeled row of the window at an **out-of-sample** score: the score the head gave it when it was picked
(``LoopState.label_score``; the selection depends on the row only through its features, so given that score its
label is a fair draw of what unlabeled rows of that score hold) or, for rows picked without a head (the seed
set), its cross-fitted score. Then ``FN^ = sum_{U, c=0} g(p)``, ``FP^ = sum_{U, c=1} (1 - g(p))``
(``missed_est``, ``false_calls_est``; the uncalibrated sums stay in ``missed_head``, ``false_calls_head``).

**Interval: prediction-powered** (Angelopoulos et al. 2023; cross-fitted as in Zrnic & Candes 2024): the
audit estimates the residual total ``sum_U (y - g(p)) (1 - c)`` by ``T^`` above (design-unbiased whatever ``g``
is), so ``FN^ + T^(...)`` is unbiased even when the calibration is wrong; its normal interval (widened to hold
the point) is the reported one, likewise for ``FP`` with ``(g(p) - y) c``. The audit-only totals
``T^(y (1 - c))``, ``T^((1 - y) c)`` stay in the record (``missed_audit``, ``false_calls_audit``). Audit rows
trained the head, whose in-sample calls are optimistic (a separable fit calls every training positive
positive), so ``p`` and ``c`` of a labeled row in these sums are **cross-fitted** (:func:`crossfit_scores`):
the score of a head fit with that row's fold held out, i.e. the score it would get unlabeled; unlabeled rows
keep the final head's.

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
    "missed_head",
    "false_calls_head",
    "calibration_slope",
    "calibration_intercept",
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
    half: np.ndarray  # half-width of the normal interval around ``raw``
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
    confidence: float,
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
        half=half,
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
    confidence: float,
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
    missed_est: float  # FN: unlabeled positives the head calls negative (expected count, calibrated scores)
    false_calls_est: float  # FP: model calls that are negative (expected count, calibrated scores)
    missed_audit: float  # FN by the audit alone (design-unbiased, unclipped)
    false_calls_audit: float  # FP by the audit alone
    missed_head: float  # FN by the head's own (uncalibrated) scores, the estimate before issue 30's fix
    false_calls_head: float  # FP by the head's own scores
    calibration_slope: float  # a of the calibration map g(p) = sigmoid(a logit p + b)
    calibration_intercept: float  # b

    def as_record(self) -> dict[str, float | int | None]:
        """The :data:`EXPORT_FIELDS` of a round's record."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k in EXPORT_FIELDS}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def fit_calibration(scores: np.ndarray, labels: np.ndarray, ridge: float) -> tuple[float, float]:
    """Platt map ``g(p) = sigmoid(a logit(p) + b)`` of out-of-sample ``scores`` (K,) to binary ``labels`` (K,):

        (a, b) = argmin  sum_i [log(1 + e^{s_i}) - y_i s_i] + ridge ((a - 1)^2 + b^2),   s_i = a logit(p_i) + b

    The ridge pulls the map toward the identity ``(1, 0)`` (trust the head until the labels say otherwise);
    with fewer than two labels of each class the identity is returned. Two parameters, L-BFGS on the exact
    gradient: O(K) per iteration.
    """
    from scipy.optimize import minimize

    y = (np.asarray(labels) == 1).astype(np.float64)
    z = _logit(scores)
    if min(y.sum(), (1 - y).sum()) < 2:
        return 1.0, 0.0

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        r = 1.0 / (1.0 + np.exp(-s)) - y
        value = np.sum(np.logaddexp(0.0, s) - y * s) + ridge * ((ab[0] - 1.0) ** 2 + ab[1] ** 2)
        return float(value), np.array([r @ z + 2 * ridge * (ab[0] - 1.0), r.sum() + 2 * ridge * ab[1]])

    a, b = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B").x
    return float(a), float(b)


def calibrate(scores: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``g(p) = sigmoid(a logit(p) + b)`` of :func:`fit_calibration`."""
    return 1.0 / (1.0 + np.exp(-(slope * _logit(scores) + intercept)))


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
    threshold: float,
    confidence: float,
    window: int | None = None,
    calibration_scores: np.ndarray | None = None,
    calibration_ridge: float,
) -> ExportEstimate | None:
    """Exported recall and model precision of the module docstring.

    ``labeled_scores`` (L,): the cross-fitted score of each labeled row (rows labeled before the window's
    rounds are never read); ``unlabeled_scores`` (U,): the final head's scores of the unlabeled rows
    (``M = #(score >= threshold)``); ``calibration_scores`` (L,): each labeled row's out-of-sample score that
    fits the calibration map ``g`` with ``calibration_ridge`` (``stop.calibration_ridge``; NaN: not used; None:
    no calibration, ``g`` = identity). Point: the
    calibrated expected errors ``FN = sum_{U, c=0} g(p)``, ``FP = sum_{U, c=1} (1 - g(p))``. Interval: the
    prediction-powered one, ``FN + T^((y - g(p)) (1 - c))`` (design-unbiased whatever ``g``) +- its normal
    half-width, widened to hold the point. None before the first audited round.
    """
    rows, labels = np.asarray(rows, np.int64), np.asarray(labels)
    y = labels == 1
    labeled_scores = np.asarray(labeled_scores, np.float64)
    slope, intercept = 1.0, 0.0
    if calibration_scores is not None:
        use = np.isfinite(calibration_scores) & (labels >= 0)
        slope, intercept = fit_calibration(np.asarray(calibration_scores)[use], labels[use], calibration_ridge)
    c = labeled_scores >= threshold
    g_labeled = calibrate(labeled_scores, slope, intercept)
    yf = y.astype(np.float64)
    values = np.stack([y & ~c, ~y & c, (yf - g_labeled) * ~c, (g_labeled - yf) * c], axis=1).astype(np.float64)
    tot = window_totals(
        rows, values, label_round, audit_rows, audit_q, audit_round, confidence=confidence, window=window
    )
    if tot is None:
        return None
    u = np.asarray(unlabeled_scores, np.float64)
    called = u >= threshold
    g = calibrate(u, slope, intercept)
    f, m = float(y.sum()), int(called.sum())
    fn, fp = float(g[~called].sum()), min(float((1.0 - g[called]).sum()), m)
    fn_pp, fp_pp = fn + tot.raw[2], fp + tot.raw[3]  # prediction-powered: model sum + audited residual
    fn_lo, fn_hi = max(min(fn_pp - tot.half[2], fn), 0.0), max(fn_pp + tot.half[2], fn)
    fp_lo, fp_hi = max(min(fp_pp - tot.half[3], fp), 0.0), min(max(fp_pp + tot.half[3], fp), m)

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
        missed_head=float(u[~called].sum()),
        false_calls_head=float((1.0 - u[called]).sum()),
        calibration_slope=slope,
        calibration_intercept=intercept,
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
