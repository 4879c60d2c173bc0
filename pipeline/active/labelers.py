"""Who answers "is this the same kind as the starter?": an oracle column or a person.

A labeler maps a batch of pool rows to int8 labels: 1 positive, 0 negative, -1 unsure (kept in
the labeled set, so it counts as effort, but not used to train the head). Nothing reads stdin.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

POSITIVE, NEGATIVE, UNSURE = 1, 0, -1


class Labeler(Protocol):
    def label(self, rows: np.ndarray, ids: Sequence[str], batch: str) -> np.ndarray:
        """int8 labels (1 / 0 / -1) of pool ``rows`` (ids ``ids``), asked as batch ``batch``.

        A labeler may also have ``guess(ids, positive)``: the loop calls it with the head's current
        call for each id just before :meth:`label` (the swipe labeler pre-marks grid pages with it).
        """


class OracleLabeler:
    """Simulated person: ``truth[row]`` is whether pool row ``row`` belongs to the positive class."""

    def __init__(self, truth: np.ndarray):
        self.truth = np.asarray(truth, dtype=bool)

    @classmethod
    def from_column(cls, values: Sequence, positive: str) -> OracleLabeler:
        """Oracle from a carried column (``oracle.column=label oracle.positive=<class>``)."""
        values = np.asarray([str(v) for v in values], dtype=str)
        truth = values == str(positive)
        if not truth.any():
            known = sorted(set(values.tolist()))
            raise ValueError(f"oracle.positive={positive!r} never occurs in the column; values: {known[:20]}")
        return cls(truth)

    def label(self, rows: np.ndarray, ids: Sequence[str], batch: str) -> np.ndarray:
        return self.truth[np.asarray(rows, dtype=np.int64)].astype(np.int8)


class LabelTimeout(TimeoutError):
    """Raised when a person has not labeled a whole batch in time; rerun the job to resume."""


class HumanLabeler:
    """Sends each batch to the swipe labeler (``pipeline.labeler.LabelStore``) and waits for it.

    The store is the same SQLite file the labeler server serves, so a person labels in the
    browser while this process waits. Ids labeled earlier (before a crash) come back at once.
    """

    def __init__(
        self,
        store,
        ids: Sequence[str],
        uris: Sequence[str],
        *,
        timeout_s: float = 3600.0,
        poll_s: float = 0.25,
        positive_label: str = "positive",
        negative_label: str = "negative",
    ):
        self.store = store
        missing = {positive_label, negative_label} - set(store.labels)
        if missing:
            raise ValueError(f"label store {store.path} has labels {store.labels}, missing {sorted(missing)}")
        self.store.register(list(map(str, ids)), list(map(str, uris)))
        self.timeout_s, self.poll_s = float(timeout_s), float(poll_s)
        self.positive_label, self.negative_label = positive_label, negative_label

    def guess(self, ids: Sequence[str], positive: np.ndarray) -> int:
        """Pre-mark ``ids`` on the labeler's grid pages with the head's call (``positive`` bool per id)."""
        marks = np.where(np.asarray(positive, dtype=bool), self.positive_label, self.negative_label)
        return self.store.set_guesses(dict(zip(map(str, ids), marks.tolist())))

    def label(self, rows: np.ndarray, ids: Sequence[str], batch: str) -> np.ndarray:
        ids = [str(i) for i in ids]
        self.store.enqueue(ids, batch=batch)
        log.info("waiting for %d labels of batch %s", len(ids), batch)
        got = self.store.wait_for_labels(ids, timeout=self.timeout_s, poll_s=self.poll_s)
        if len(got) < len(ids):
            raise LabelTimeout(
                f"batch {batch}: {len(ids) - len(got)} of {len(ids)} images still unlabeled after "
                f"{self.timeout_s:.0f}s; rerun the same command to resume"
            )
        mapping = {self.positive_label: POSITIVE, self.negative_label: NEGATIVE}
        return np.array([mapping.get(got[i], UNSURE) for i in ids], dtype=np.int8)
