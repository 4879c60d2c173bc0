"""The paper's evaluation measures of one active-labeling run, when the truth is known.

With ``L`` the labeled rows, ``R`` the unlabeled remainder, ``P`` the predicted positives in ``R``
and ``T`` the true positives of the pool:

    labeling_effort      = |L| / N
    positives_retrieved  = (|human-labeled positives| + |P & T|) / |T|
    false_positive_rate  = |P \\ T| / |P|                 (0 when nothing is predicted)
    f1                   = 2 |P & T| / (2 |P & T| + |P \\ T| + |(R & T) \\ P|)   (on R only)
    recall               = |P & T| / |R & T|                  (on R only)
    recall_labeled       = |human-labeled positives| / |T|    (what ``stop`` estimates without an oracle)

``recall`` and ``f1`` are None (unknown, not 0) once ``R`` holds no true positive: every positive is
already labeled, so there is nothing left for the head to find.
"""

from __future__ import annotations

import numpy as np


def run_metrics(
    truth: np.ndarray, labeled_rows: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> dict[str, float | None]:
    """Measures above; ``predicted`` is the (N,) bool prediction over the whole pool."""
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {truth.shape} and predictions {predicted.shape} differ in shape")
    labeled = np.zeros(len(truth), dtype=bool)
    labeled[np.asarray(labeled_rows, dtype=np.int64)] = True
    pred = predicted & ~labeled
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth & ~labeled).sum())
    human_positive = int((np.asarray(labels) == 1).sum())
    n_true = int(truth.sum())
    return {
        "labeling_effort": float(labeled.sum() / len(truth)),
        "positives_retrieved": float((human_positive + tp) / max(n_true, 1)),
        "false_positive_rate": float(fp / max(tp + fp, 1)),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if tp + fn else None,
        "precision": float(tp / max(tp + fp, 1)),
        "recall": float(tp / (tp + fn)) if tp + fn else None,
        "recall_labeled": float(human_positive / max(n_true, 1)),
    }
