"""The label store's tables and its append-only event log (see :mod:`pipeline.labeler.store`).

:data:`SCHEMA` creates the tables; :func:`append_label` / :func:`append_undo` are the only writers
of ``events`` and keep the derived ``current`` row, the queue's ``done`` flag and the leases of an
id in step with the log, inside the caller's transaction. The current label of an id is its
latest label event that no undo event cancels (:data:`LATEST_LIVE`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

SCHEMA_VERSION = "1"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS catalog (id TEXT PRIMARY KEY, uri TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    id TEXT PRIMARY KEY REFERENCES catalog(id),
    batch TEXT,
    seq INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_open ON queue(seq) WHERE done = 0;
CREATE INDEX IF NOT EXISTS queue_batch ON queue(batch);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    label TEXT NOT NULL,
    annotator TEXT NOT NULL,
    timestamp REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    undoes INTEGER REFERENCES events(seq),
    request_id TEXT UNIQUE,
    page TEXT
);
CREATE INDEX IF NOT EXISTS events_id ON events(id, seq);
CREATE INDEX IF NOT EXISTS events_annotator ON events(annotator, seq);
CREATE UNIQUE INDEX IF NOT EXISTS events_undoes ON events(undoes) WHERE undoes IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TABLE IF NOT EXISTS current (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    label TEXT NOT NULL,
    annotator TEXT NOT NULL,
    timestamp REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    annotator TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_annotator ON leases(annotator);
CREATE TABLE IF NOT EXISTS annotators (
    name TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS guesses (id TEXT PRIMARY KEY, label TEXT NOT NULL) WITHOUT ROWID;
"""
# Stores created before grid pages have no ``events.page`` column: added on open (a NULL page).
PAGE_INDEX = "CREATE INDEX IF NOT EXISTS events_page ON events(page) WHERE page IS NOT NULL"

# Latest label event of one id that no undo event cancels: the definition of "current label".
LATEST_LIVE = """
SELECT e.seq, e.label, e.annotator, e.timestamp FROM events e
WHERE e.id = ? AND e.undone = 0
  AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq)
ORDER BY e.seq DESC LIMIT 1
"""


class LabelError(ValueError):
    """A request the store refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LabelEvent:
    """One row of the event log."""

    seq: int
    id: str
    label: str
    annotator: str
    timestamp: float
    undone: bool
    undoes: int | None
    request_id: str | None
    page: str | None = None


EVENT_COLS = "seq, id, label, annotator, timestamp, undone, undoes, request_id, page"


def to_event(row: tuple) -> LabelEvent:
    seq, item_id, label, annotator, ts, undone, undoes, request_id, page = row
    return LabelEvent(seq, item_id, label, annotator, ts, bool(undone), undoes, request_id, page)


def event_by_request(db: sqlite3.Connection, request_id: str) -> LabelEvent | None:
    row = db.execute(f"SELECT {EVENT_COLS} FROM events WHERE request_id = ?", (request_id,)).fetchone()
    return None if row is None else to_event(row)


def append_label(
    db: sqlite3.Connection,
    item_id: str,
    label: str,
    annotator: str,
    now: float,
    request_id: str | None,
    page: str | None,
) -> int:
    """Check that ``annotator`` may label queued ``item_id`` now, append the event, update derived rows."""
    if db.execute("SELECT 1 FROM queue WHERE id = ?", (item_id,)).fetchone() is None:
        raise LabelError(f"id {item_id!r} is not in the labeling queue", status=404)
    holder = db.execute("SELECT annotator FROM leases WHERE id = ? AND expires > ?", (item_id, now)).fetchone()
    if holder is not None and holder[0] != annotator:
        raise LabelError(f"id {item_id!r} is held by another labeler", status=409)
    if db.execute("SELECT 1 FROM current WHERE id = ?", (item_id,)).fetchone() is not None:
        raise LabelError(f"id {item_id!r} already has a label (undo it first)", status=409)
    seq = db.execute(
        "INSERT INTO events (id, label, annotator, timestamp, undone, undoes, request_id, page) "
        "VALUES (?, ?, ?, ?, 0, NULL, ?, ?)",
        (item_id, label, annotator, now, request_id, page),
    ).lastrowid
    db.execute("INSERT OR REPLACE INTO current VALUES (?, ?, ?, ?, ?)", (item_id, seq, label, annotator, now))
    db.execute("UPDATE queue SET done = 1 WHERE id = ?", (item_id,))
    db.execute("DELETE FROM leases WHERE id = ?", (item_id,))
    return seq


def append_undo(
    db: sqlite3.Connection,
    target: int,
    item_id: str,
    label: str,
    annotator: str,
    now: float,
    request_id: str | None,
    page: str | None,
    lease_seconds: float,
) -> int:
    """Append the event cancelling ``target``, re-derive the id, lease it back to ``annotator``."""
    seq = db.execute(
        "INSERT INTO events (id, label, annotator, timestamp, undone, undoes, request_id, page) "
        "VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
        (item_id, label, annotator, now, target, request_id, page),
    ).lastrowid
    refresh_current(db, item_id)
    db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (item_id, annotator, now + lease_seconds))
    return seq


def refresh_current(db: sqlite3.Connection, item_id: str) -> None:
    """Re-derive ``current`` and the queue flag of one id from the log."""
    row = db.execute(LATEST_LIVE, (item_id,)).fetchone()
    if row is None:
        db.execute("DELETE FROM current WHERE id = ?", (item_id,))
    else:
        db.execute("INSERT OR REPLACE INTO current VALUES (?, ?, ?, ?, ?)", (item_id, *row))
    db.execute("UPDATE queue SET done = ? WHERE id = ?", (int(row is not None), item_id))


def check_annotator(name: str) -> None:
    if not isinstance(name, str) or not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "._-@ " for c in name):
        raise LabelError(f"annotator must be 1-64 letters, digits or ._-@ and spaces, got {name!r}", status=422)
