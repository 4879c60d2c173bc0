"""Durable label store: SQLite in WAL mode with an append-only event log, a queue and leases.

Tables (one ``labels.sqlite`` per run, usually ``<run_dir>/labels/labels.sqlite``)::

    meta(key, value)                          labels allowed, schema version
    catalog(id, uri)                          every image that may be shown, by id
    queue(id, batch, seq, done)               ids to label, in order; done = has a current label
    events(seq, id, label, annotator, timestamp, undone, undoes, request_id, page)
                                              append-only (UPDATE/DELETE raise); an undo is a new
                                              row with undone=1 and undoes=<seq it cancels>; the
                                              labels of one grid page (and their undos) share
                                              ``page``, so a page is labeled and undone as a whole
    current(id, seq, label, annotator, timestamp)
                                              derived: per id, the latest label event not
                                              cancelled by an undo; updated in the same
                                              transaction as the event, rebuildable from the log
    leases(id, annotator, expires)            who holds an image now; expired rows are ignored
    annotators(name, key_hash, created)       which session key owns an annotator name (the app
                                              claims a name for the first session that uses it)
    guesses(id, label)                        the label a grid page pre-marks an id with (a
                                              model's prediction); ids without one get a default

Every write is one ``BEGIN IMMEDIATE`` transaction, so a label acknowledged to a client is on disk
(``synchronous=FULL`` by default) and survives a SIGKILL of the server. A client-chosen
``request_id`` makes label and undo requests idempotent: a retry returns the first result.
Several processes may open the same file (the server and an active-learning loop, say).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pipeline.labeler.events import (  # noqa: F401 - LabelError, LabelEvent re-exported
    EVENT_COLS,
    PAGE_INDEX,
    SCHEMA,
    SCHEMA_VERSION,
    LabelError,
    LabelEvent,
    append_label,
    append_undo,
    check_annotator,
    event_by_request,
    to_event,
)
from pipeline.labeler.settings import conf_default

BINARY_LABELS: tuple[str, ...] = ("positive", "negative", "unsure")


@dataclass(frozen=True)
class Progress:
    """Queue counts: ``labeled`` of ``queued`` ids have a current label; ``by_label`` splits them."""

    queued: int
    labeled: int
    leased: int
    by_label: dict[str, int]
    status: str | None = None  # a line from the process feeding the queue (e.g. active: estimated recall)

    def as_dict(self) -> dict:
        return {
            "queued": self.queued,
            "labeled": self.labeled,
            "leased": self.leased,
            "by_label": self.by_label,
            "status": self.status,
        }


class LabelStore:
    """The label database of one run. Thread-safe; one SQLite connection per thread.

    ``labels`` fixes the label vocabulary the first time a store is created (default
    ``positive, negative, unsure``); reopening with another vocabulary raises ``ValueError``.
    ``synchronous`` and a method's ``lease_seconds``: None takes ``labeler.*`` of ``conf/labeler``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        labels: Sequence[str] | None = None,
        synchronous: str | None = None,
        busy_timeout_s: float = 30.0,
    ):
        synchronous = conf_default("synchronous") if synchronous is None else synchronous
        if "://" in str(path):
            raise ValueError(f"the label store needs a local file path, got {path!r}")
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, got {synchronous!r}")
        self.path = os.path.abspath(os.fspath(path))
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        with self._write() as db:
            if "page" not in {r[1] for r in db.execute("PRAGMA table_info(events)")}:
                db.execute("ALTER TABLE events ADD COLUMN page TEXT")
            db.execute(PAGE_INDEX)
        self.labels = self._init_labels(labels)

    # ---- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_ms / 1000)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the in-process lock saves SQLite's busy-wait between threads."""
        db = self._conn()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _init_labels(self, labels: Sequence[str] | None) -> tuple[str, ...]:
        if labels is not None:
            labels = tuple(str(x) for x in labels)
            if not labels or len(set(labels)) != len(labels) or any(not x or len(x) > 64 for x in labels):
                raise ValueError(f"labels must be distinct non-empty names (<= 64 chars), got {labels!r}")
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'labels'").fetchone()
            if row is None:
                chosen = labels or BINARY_LABELS
                db.execute(
                    "INSERT INTO meta VALUES ('labels', ?), ('schema', ?)", ("\x1f".join(chosen), SCHEMA_VERSION)
                )
                return chosen
        stored = tuple(row[0].split("\x1f"))
        if labels is not None and labels != stored:
            raise ValueError(f"{self.path} was created with labels {stored}, not {labels}")
        return stored

    # ---- catalog and queue --------------------------------------------------------------------
    def register(self, ids: Sequence[str], uris: Sequence[str]) -> int:
        """Add ``id -> uri`` pairs to the catalog (existing ids keep their uri). Returns rows added."""
        if len(ids) != len(uris):
            raise ValueError(f"{len(ids)} ids but {len(uris)} uris")
        with self._write() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO catalog VALUES (?, ?)", zip(map(str, ids), map(str, uris)))
            return db.total_changes - before

    def enqueue(self, ids: Iterable[str], batch: str | None = None) -> int:
        """Append catalog ``ids`` to the labeling queue (ids already queued are left alone).

        Raises ``LabelError`` (404) naming the ids missing from the catalog. Returns ids added.
        """
        ids = list(dict.fromkeys(map(str, ids)))
        with self._write() as db:
            missing = [i for i in ids if db.execute("SELECT 1 FROM catalog WHERE id = ?", (i,)).fetchone() is None]
            if missing:
                raise LabelError(f"{len(missing)} ids not in the catalog, e.g. {missing[:3]}", status=404)
            start = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM queue").fetchone()[0]
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO queue (id, batch, seq, done) "
                "VALUES (?, ?, ?, EXISTS (SELECT 1 FROM current WHERE id = ?))",
                ((i, batch, start + k, i) for k, i in enumerate(ids)),
            )
            return db.total_changes - before

    def uri(self, item_id: str) -> str | None:
        """The catalog uri of ``item_id`` (None when unknown)."""
        row = self._conn().execute("SELECT uri FROM catalog WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else row[0]

    # ---- annotator identity -----------------------------------------------------------------------
    def claim(self, annotator: str, key: str, max_annotators: int | None = None, now: float | None = None) -> bool:
        """Bind ``annotator`` to the session ``key`` (stored hashed); True when newly claimed.

        Refuses (``LabelError`` 403) a name another key owns, and new names once ``max_annotators``
        are claimed. A key may own several names; a name has one owner for the store's lifetime
        (:meth:`unclaim` frees it).
        """
        check_annotator(annotator)
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        with self._write() as db:
            row = db.execute("SELECT key_hash FROM annotators WHERE name = ?", (annotator,)).fetchone()
            if row is not None:
                if not hmac.compare_digest(row[0], key_hash):
                    raise LabelError(
                        f"annotator name {annotator!r} belongs to another labeler session; choose another name",
                        status=403,
                    )
                return False
            count = db.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
            if max_annotators is not None and count >= max_annotators:
                raise LabelError(f"{count} annotator names are in use, the limit (labeler.max_annotators)", status=403)
            db.execute(
                "INSERT INTO annotators VALUES (?, ?, ?)", (annotator, key_hash, time.time() if now is None else now)
            )
            return True

    def unclaim(self, annotator: str) -> bool:
        """Free ``annotator`` for a new session (an operator's remedy for a lost browser session)."""
        with self._write() as db:
            return db.execute("DELETE FROM annotators WHERE name = ?", (annotator,)).rowcount > 0

    # ---- leases ---------------------------------------------------------------------------------
    def lease(
        self,
        annotator: str,
        n: int = 1,
        lease_seconds: float | None = None,
        now: float | None = None,
        max_held: int | None = None,
        similar: Callable[[str, list[str]], list[str]] | None = None,
        window: int = 1024,
    ) -> list[str]:
        """Up to ``n`` unlabeled queued ids held for ``annotator`` until ``now + lease_seconds``.

        Ids this annotator already holds come first (a reloaded page gets them back), then open
        queue ids in queue order that nobody else holds. Leases are renewed on every call.
        ``max_held``: the annotator never holds more than this many ids at once (lease quota).
        ``similar(anchor, candidates)``: ranks the next ``window`` open ids by likeness to the
        page's first id (a grid page of similar images; see ``pipeline.labeler.grid``).
        """
        check_annotator(annotator)
        if n < 1:
            raise LabelError(f"n must be >= 1, got {n}")
        now = time.time() if now is None else now
        expires = now + (conf_default("lease_seconds") if lease_seconds is None else lease_seconds)
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE expires <= ?", (now,))
            holding = [
                r[0]
                for r in db.execute(
                    "SELECT l.id FROM leases l JOIN queue q ON q.id = l.id "
                    "WHERE l.annotator = ? AND q.done = 0 ORDER BY q.seq",
                    (annotator,),
                )
            ]
            ids = holding[:n]
            room = n - len(ids) if max_held is None else min(n - len(ids), max_held - len(holding))
            if room > 0:
                fresh = [
                    r[0]
                    for r in db.execute(
                        "SELECT q.id FROM queue q WHERE q.done = 0 "
                        "AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.id = q.id) ORDER BY q.seq LIMIT ?",
                        (room if similar is None else max(room, window),),
                    )
                ]
                if similar is not None and fresh:
                    anchor = ids[0] if ids else fresh.pop(0)
                    fresh = ([] if ids else [anchor]) + similar(anchor, fresh)
                ids += fresh[:room]
            db.executemany("INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", ((i, annotator, expires) for i in ids))
        return ids

    def release(self, annotator: str, ids: Iterable[str] | None = None) -> int:
        """Give back ``annotator``'s leases (all of them when ``ids`` is None). Returns leases freed."""
        with self._write() as db:
            before = db.total_changes
            if ids is None:
                db.execute("DELETE FROM leases WHERE annotator = ?", (annotator,))
            else:
                db.executemany("DELETE FROM leases WHERE id = ? AND annotator = ?", ((i, annotator) for i in ids))
            return db.total_changes - before

    # ---- labels ---------------------------------------------------------------------------------
    def label(
        self,
        item_id: str,
        label: str,
        annotator: str,
        request_id: str | None = None,
        now: float | None = None,
    ) -> tuple[LabelEvent, bool]:
        """Record ``label`` for queued ``item_id``. Returns (event, duplicate).

        ``duplicate`` is True when ``request_id`` was seen before: nothing is written and the
        first event is returned. Refuses (``LabelError``) unknown labels (422), ids not in the
        queue (404), ids another annotator holds (409) and ids that already have a label (409).
        """
        check_annotator(annotator)
        if label not in self.labels:
            raise LabelError(f"unknown label {label!r}; allowed: {list(self.labels)}", status=422)
        now = time.time() if now is None else now
        with self._write() as db:
            if request_id is not None:
                prior = event_by_request(db, request_id)
                if prior is not None:
                    if prior.id != item_id or prior.undone:
                        raise LabelError(f"request_id {request_id!r} was used for another request", status=409)
                    return prior, True
            seq = append_label(db, item_id, label, annotator, now, request_id, None)
        return LabelEvent(seq, item_id, label, annotator, now, False, None, request_id), False

    def label_page(
        self, labels: Mapping[str, str], annotator: str, page: str, now: float | None = None
    ) -> tuple[list[LabelEvent], bool]:
        """Record a whole grid page ``{id: label}`` in one transaction (all or none). Returns (events, duplicate).

        ``page`` is a client-chosen key shared by the page's events: a retry with the same key
        returns the first events (``duplicate``); a key whose page was undone is refused (409).
        Each id is checked as in :meth:`label`.
        """
        check_annotator(annotator)
        if not page or len(page) > 64:
            raise LabelError(f"page must be a 1-64 character key, got {page!r}", status=422)
        if not labels:
            raise LabelError("a page needs at least one label", status=422)
        bad = sorted({v for v in labels.values() if v not in self.labels})
        if bad:
            raise LabelError(f"unknown label {bad[0]!r}; allowed: {list(self.labels)}", status=422)
        now = time.time() if now is None else now
        with self._write() as db:
            prior = [to_event(r) for r in db.execute(f"SELECT {EVENT_COLS} FROM events WHERE page = ?", (page,))]
            if prior:
                if (
                    any(e.undone for e in prior)
                    or {e.id for e in prior} != set(labels)
                    or prior[0].annotator != annotator
                ):
                    raise LabelError(f"page {page!r} was used for another request or undone", status=409)
                return prior, True
            events = []
            for item_id, label in labels.items():
                seq = append_label(db, item_id, label, annotator, now, None, page)
                events.append(LabelEvent(seq, item_id, label, annotator, now, False, None, None, page))
        return events, False

    def undo(
        self,
        annotator: str,
        request_id: str | None = None,
        lease_seconds: float | None = None,
        now: float | None = None,
    ) -> tuple[LabelEvent, bool] | None:
        """Cancel ``annotator``'s most recent live label; the id goes back to them under a lease.

        Appends an event with ``undone=1, undoes=<cancelled seq>`` and returns (that event,
        duplicate); None when the annotator has nothing left to undo.
        """
        check_annotator(annotator)
        now = time.time() if now is None else now
        with self._write() as db:
            if request_id is not None:
                prior = event_by_request(db, request_id)
                if prior is not None:
                    if not prior.undone:
                        raise LabelError(f"request_id {request_id!r} was used for another request", status=409)
                    return prior, True
            row = db.execute(
                "SELECT e.seq, e.id, e.label FROM events e WHERE e.annotator = ? AND e.undone = 0 "
                "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq) ORDER BY e.seq DESC LIMIT 1",
                (annotator,),
            ).fetchone()
            if row is None:
                return None
            target, item_id, label = row
            held = conf_default("lease_seconds") if lease_seconds is None else lease_seconds
            seq = append_undo(db, target, item_id, label, annotator, now, request_id, None, held)
        return LabelEvent(seq, item_id, label, annotator, now, True, target, request_id), False

    def undo_page(
        self,
        annotator: str,
        request_id: str | None = None,
        lease_seconds: float | None = None,
        now: float | None = None,
    ) -> tuple[list[LabelEvent], bool] | None:
        """Cancel ``annotator``'s most recent live page (or single label) as a whole.

        Appends one undo event per label of that page (sharing its ``page`` key; the first
        carries ``request_id``), gives the ids back to the annotator under a lease and returns
        (the undo events, duplicate); None when there is nothing left to undo.
        """
        check_annotator(annotator)
        now = time.time() if now is None else now
        with self._write() as db:
            if request_id is not None:
                prior = event_by_request(db, request_id)
                if prior is not None:
                    if not prior.undone:
                        raise LabelError(f"request_id {request_id!r} was used for another request", status=409)
                    if prior.page is None:
                        return [prior], True
                    rows = db.execute(
                        f"SELECT {EVENT_COLS} FROM events WHERE page = ? AND undone = 1 ORDER BY seq", (prior.page,)
                    )
                    return [to_event(r) for r in rows], True
            live = (
                "SELECT e.seq, e.id, e.label, e.page FROM events e WHERE e.annotator = ? AND e.undone = 0 "
                "AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq)"
            )
            last = db.execute(f"{live} ORDER BY e.seq DESC LIMIT 1", (annotator,)).fetchone()
            if last is None:
                return None
            page = last[3]
            rows = [last] if page is None else db.execute(f"{live} AND e.page = ? ORDER BY e.seq", (annotator, page))
            events, held = [], conf_default("lease_seconds") if lease_seconds is None else lease_seconds
            for k, (target, item_id, label, _) in enumerate(list(rows)):
                rid = request_id if k == 0 else None
                seq = append_undo(db, target, item_id, label, annotator, now, rid, page, held)
                events.append(LabelEvent(seq, item_id, label, annotator, now, True, target, rid, page))
        return events, False

    def set_guesses(self, guesses: Mapping[str, str]) -> int:
        """Pre-mark ids on grid pages with these labels (a model's predictions). Returns ids set."""
        bad = sorted({v for v in guesses.values() if v not in self.labels})
        if bad:
            raise ValueError(f"guess {bad[0]!r} is not a label of this store: {list(self.labels)}")
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO guesses VALUES (?, ?)", ((str(k), v) for k, v in guesses.items()))
        return len(guesses)

    def guesses(self, ids: Iterable[str]) -> dict[str, str]:
        """``id -> guessed label`` for the ids that have one."""
        db = self._conn()
        out: dict[str, str] = {}
        for item_id in ids:
            row = db.execute("SELECT label FROM guesses WHERE id = ?", (item_id,)).fetchone()
            if row is not None:
                out[item_id] = row[0]
        return out

    # ---- reading ----------------------------------------------------------------------------------
    def current_labels(self, ids: Iterable[str] | None = None) -> dict[str, str]:
        """``id -> label`` for every id with a live label (restricted to ``ids`` when given)."""
        db = self._conn()
        if ids is None:
            return dict(db.execute("SELECT id, label FROM current ORDER BY seq"))
        out: dict[str, str] = {}
        for item_id in ids:
            row = db.execute("SELECT label FROM current WHERE id = ?", (item_id,)).fetchone()
            if row is not None:
                out[item_id] = row[0]
        return out

    def current_rows(self) -> list[tuple[str, str, str, float, str]]:
        """(id, label, annotator, timestamp, uri) of every live label, in labeling order."""
        return (
            self._conn()
            .execute(
                "SELECT c.id, c.label, c.annotator, c.timestamp, COALESCE(k.uri, '') FROM current c "
                "LEFT JOIN catalog k ON k.id = c.id ORDER BY c.seq"
            )
            .fetchall()
        )

    def events(self) -> list[LabelEvent]:
        """The whole event log, in order."""
        rows = self._conn().execute(f"SELECT {EVENT_COLS} FROM events ORDER BY seq").fetchall()
        return [to_event(r) for r in rows]

    def progress(self, batch: str | None = None, now: float | None = None) -> Progress:
        """Counts over the whole queue, or over one ``batch``."""
        now = time.time() if now is None else now
        db = self._conn()
        where, args = ("WHERE q.batch = ?", (batch,)) if batch is not None else ("", ())
        queued, labeled = db.execute(f"SELECT COUNT(*), COALESCE(SUM(q.done), 0) FROM queue q {where}", args).fetchone()
        leased = db.execute(
            f"SELECT COUNT(*) FROM leases l JOIN queue q ON q.id = l.id {where} {'AND' if where else 'WHERE'} l.expires > ?",
            (*args, now),
        ).fetchone()[0]
        by_label = dict(
            db.execute(
                f"SELECT c.label, COUNT(*) FROM current c JOIN queue q ON q.id = c.id {where} GROUP BY c.label", args
            )
        )
        status = db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        return Progress(
            int(queued),
            int(labeled),
            int(leased),
            {k: int(by_label.get(k, 0)) for k in self.labels},
            None if status is None else status[0],
        )

    def set_status(self, line: str | None) -> None:
        """The line shown next to the labeler's progress (None clears it)."""
        with self._write() as db:
            db.execute("DELETE FROM meta WHERE key = 'status'")
            if line:
                db.execute("INSERT INTO meta VALUES ('status', ?)", (str(line)[:200],))

    def wait_for_labels(self, ids: Sequence[str], timeout: float, poll_s: float = 0.25) -> dict[str, str]:
        """Block until every id in ``ids`` has a live label or ``timeout`` seconds pass.

        Returns ``id -> label`` for the ids labeled by then (all of them unless it timed out).
        """
        ids = list(dict.fromkeys(map(str, ids)))
        deadline = time.monotonic() + timeout
        while True:
            got = self.current_labels(ids)
            if len(got) == len(ids) or time.monotonic() >= deadline:
                return got
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))

    def rebuild_current(self) -> int:
        """Recompute the derived ``current`` table and queue ``done`` flags from the event log."""
        with self._write() as db:
            db.execute("DELETE FROM current")
            db.execute(
                "INSERT INTO current SELECT e.id, e.seq, e.label, e.annotator, e.timestamp FROM events e "
                "WHERE e.undone = 0 AND NOT EXISTS (SELECT 1 FROM events u WHERE u.undoes = e.seq) "
                "AND e.seq = (SELECT MAX(e2.seq) FROM events e2 WHERE e2.id = e.id AND e2.undone = 0 "
                "AND NOT EXISTS (SELECT 1 FROM events u2 WHERE u2.undoes = e2.seq))"
            )
            db.execute("UPDATE queue SET done = EXISTS (SELECT 1 FROM current c WHERE c.id = queue.id)")
            return db.execute("SELECT COUNT(*) FROM current").fetchone()[0]
