"""Knowing when to stop: the recall of the labeled set, estimated from a small random audit each round.

Round ``s`` (``s >= 1``): after the active batch ``B_s`` is picked, ``m_s`` audit draws are made with
replacement from the unlabeled rest ``Q_s`` (``n_s`` rows) with probabilities

    q_i = (1 - u) p_i / sum_{Q_s} p  +  u / n_s          (p: the round's head scores, u = stop.uniform_share)

and labeled together with the batch (the person cannot tell them apart). The Hansen-Hurwitz estimate of
the positives in ``Q_s`` is unbiased whatever the head, since every ``q_i >= u / n_s > 0``:

    P^_s = (1 / m_s) sum_j z_j,   z_j = y_j / q_j

Every positive labeled after the draw came from ``Q_s``, so the positives still unlabeled at round ``t`` are
exactly ``R_t = P_s - D_{s,t}`` (``D_{s,t}``: positives among round ``s``'s audit rows and among every row
labeled after round ``s``), and each audited round gives an unbiased ``P^_s - D_{s,t}``. The last
``stop.window`` audited rounds are averaged with weights ``lambda_s ∝ m_s`` (fixed by the design, so the
mean stays unbiased; audits of later rounds use better heads, hence the window). Each round's draws are
independent given the past, so

    Var(R^_t) = sum_s lambda_s^2 s_s^2 / m_s

where ``s_s^2`` is the sample variance of the round's ``z`` plus one pseudo-positive (``z = mean 1/q`` of
its draws; the Agresti-Coull idea), so a round that drew no positive does not claim zero spread. With
``F`` the positives labeled so far and the normal interval ``[R_lo, R_hi]`` (clipped at 0) at ``confidence``:

    recall = F / (F + R^),   interval [F / (F + R_hi), F / (F + R_lo)]

Audit labels train the head like any other label: the head only changes later rounds' ``q``, which those
rounds' weights account for.
"""

from __future__ import annotations

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


RECALL_FIELDS = (  # per-round record fields (None before the first audit)
    "recall_est",
    "recall_lo",
    "recall_hi",
    "remaining_est",
    "remaining_lo",
    "remaining_hi",
    "audit_labeled",
    "audit_positive",
)


@dataclass(frozen=True)
class RecallEstimate:
    """Estimated recall of the labeled set with its interval, and the audit counts behind it."""

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
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k in RECALL_FIELDS}


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
    """The estimate above from the labeled set (``rows, labels, label_round``, each (L,)) and every audit
    draw so far (``audit_rows, audit_q, audit_round``, each (A,); every drawn row is among ``rows``).
    None before the first audited round."""
    rows, labels = np.asarray(rows, np.int64), np.asarray(labels)
    label_round = np.asarray(label_round)
    audit_rows, audit_q = np.asarray(audit_rows, np.int64), np.asarray(audit_q, np.float64)
    audit_round = np.asarray(audit_round)
    if not len(audit_rows):
        return None
    positive_rows = np.unique(rows[labels == 1])
    found = len(positive_rows)
    audited = np.unique(audit_round)
    used = audited if window is None else audited[-window:]
    draws = np.array([(audit_round == s).sum() for s in used], dtype=np.float64)
    lam = draws / draws.sum()
    est, var = np.zeros(len(used)), np.zeros(len(used))
    for i, s in enumerate(used):
        mask = audit_round == s
        y = np.isin(audit_rows[mask], positive_rows)
        z = y / audit_q[mask]
        pseudo = np.append(z, np.mean(1.0 / audit_q[mask]))
        later = int(((labels == 1) & (label_round > s)).sum())
        own = int(np.isin(np.unique(audit_rows[mask]), positive_rows).sum())
        est[i] = z.mean() - own - later
        var[i] = pseudo.var(ddof=1) / len(z)
    remaining = float(lam @ est)
    half = float(norm.ppf(0.5 + confidence / 2) * np.sqrt(lam**2 @ var))
    lo, hi = max(remaining - half, 0.0), max(remaining + half, 0.0)
    point = max(remaining, 0.0)
    uniq = np.unique(audit_rows)

    def recall(r: float) -> float | None:
        return None if found + r <= 0 else round(found / (found + r), 4)

    return RecallEstimate(
        recall_est=recall(point),
        recall_lo=recall(hi),
        recall_hi=recall(lo),
        remaining_est=point,
        remaining_raw=remaining,
        remaining_lo=lo,
        remaining_hi=hi,
        found=found,
        audit_rounds=len(used),
        audit_draws=int(draws.sum()),
        audit_labeled=len(uniq),
        audit_positive=int(np.isin(uniq, positive_rows).sum()),
    )
