"""Label store: event log semantics, derived current labels, leases, idempotency, validation."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.labeler import LabelError, LabelStore


def _reference_current(events) -> dict[str, str]:
    """Replay the log in Python: an undo cancels the event it names; latest live event wins."""
    cancelled = {e.undoes for e in events if e.undone}
    current: dict[str, str] = {}
    for e in events:
        if not e.undone and e.seq not in cancelled:
            current[e.id] = e.label
    return current


def test_label_undo_and_current(store: LabelStore, image_files):
    ids, _ = image_files
    a, b = ids[:2]
    store.label(a, "positive", "alice")
    store.label(b, "negative", "alice")
    assert store.current_labels() == {a: "positive", b: "negative"}
    event, dup = store.undo("alice")
    assert (event.id, event.undone, dup) == (b, True, False)
    assert store.current_labels() == {a: "positive"}
    # the undone id is leased back to alice and can be relabeled
    assert store.lease("bob", n=60).count(b) == 0
    store.label(b, "unsure", "alice")
    assert store.current_labels() == {a: "positive", b: "unsure"}
    p = store.progress()
    assert (p.queued, p.labeled, p.by_label) == (60, 2, {"positive": 1, "negative": 0, "unsure": 1})
    assert store.current_labels() == _reference_current(store.events())


def test_events_are_append_only(store: LabelStore, image_files):
    store.label(image_files[0][0], "positive", "alice")
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE events SET label = 'negative'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM events")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_request_id_makes_label_idempotent(store: LabelStore, image_files):
    a = image_files[0][0]
    first, dup1 = store.label(a, "positive", "alice", request_id="req-00000001")
    again, dup2 = store.label(a, "positive", "alice", request_id="req-00000001")
    assert (dup1, dup2, again.seq) == (False, True, first.seq)
    assert len(store.events()) == 1
    with pytest.raises(LabelError) as err:  # same id, new request: already labeled
        store.label(a, "negative", "alice", request_id="req-00000002")
    assert err.value.status == 409
    undo1, _ = store.undo("alice", request_id="undo-0000001")
    undo2, dup = store.undo("alice", request_id="undo-0000001")
    assert dup and undo2.seq == undo1.seq and len(store.events()) == 2


def test_leases_are_disjoint_and_expire(store: LabelStore):
    now = 1_000_000.0
    alice = store.lease("alice", n=5, lease_seconds=60, now=now)
    bob = store.lease("bob", n=5, lease_seconds=60, now=now)
    assert len(alice) == len(bob) == 5 and not set(alice) & set(bob)
    assert store.lease("alice", n=5, lease_seconds=60, now=now + 1) == alice  # held ones come back
    with pytest.raises(LabelError) as err:
        store.label(alice[0], "positive", "bob", now=now + 2)
    assert err.value.status == 409
    # after expiry alice's images return to the queue, ahead of later ones
    carol = store.lease("carol", n=5, lease_seconds=60, now=now + 61)
    assert carol == alice
    assert store.release("carol") == 5
    assert store.lease("dave", n=1, now=now + 62) == [alice[0]]


def test_validation(store: LabelStore, image_files, tmp_path: Path):
    a = image_files[0][0]
    with pytest.raises(LabelError) as err:
        store.label(a, "maybe", "alice")
    assert err.value.status == 422
    with pytest.raises(LabelError) as err:
        store.label("no/such/id", "positive", "alice")
    assert err.value.status == 404
    with pytest.raises(LabelError) as err:
        store.enqueue(["no/such/id"])
    assert err.value.status == 404
    with pytest.raises(LabelError):
        store.label(a, "positive", "alice; DROP TABLE events")
    assert store.undo("nobody") is None
    with pytest.raises(ValueError, match="created with labels"):
        LabelStore(store.path, labels=["cat", "dog"])
    with pytest.raises(ValueError, match="local file"):
        LabelStore("s3://bucket/labels.sqlite")
    multi = LabelStore(tmp_path / "multi.sqlite", labels=["forest", "river", "beach"])
    assert multi.labels == ("forest", "river", "beach")
    assert LabelStore(tmp_path / "multi.sqlite").labels == multi.labels


def test_wait_for_labels(store: LabelStore, image_files):
    ids = image_files[0][:3]
    assert store.wait_for_labels(ids, timeout=0.2) == {}

    def oracle() -> None:
        time.sleep(0.2)
        for i in ids:
            store.label(i, "negative", "oracle")

    threading.Thread(target=oracle).start()
    assert store.wait_for_labels(ids, timeout=30) == {i: "negative" for i in ids}


def test_enqueue_keeps_order_and_marks_labeled(store: LabelStore, image_files, tmp_path: Path):
    ids, uris = image_files
    other = LabelStore(tmp_path / "other.sqlite")
    other.register(ids, uris)
    assert other.enqueue(ids[10:15], batch="r1") == 5
    assert other.enqueue(ids[12:20], batch="r2") == 5  # already queued ids are left alone
    assert other.lease("a", n=10) == ids[10:20]
    assert other.progress(batch="r2").queued == 5


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["label", "undo"]),
            st.integers(0, 1),
            st.integers(0, 5),
            st.sampled_from(["positive", "negative", "unsure"]),
        ),
        max_size=40,
    )
)
def test_current_matches_log_replay(tmp_path_factory, image_files, ops):
    """Property: the maintained ``current`` table equals a replay of the log and a full rebuild."""
    ids, uris = image_files
    s = LabelStore(tmp_path_factory.mktemp("prop") / "l.sqlite")
    s.register(ids[:6], uris[:6])
    s.enqueue(ids[:6])
    for op, who, k, label in ops:
        annotator = ["alice", "bob"][who]
        try:
            if op == "label":
                s.label(ids[k], label, annotator, now=0.0)  # now=0: leases (expiry 300) never block
            else:
                s.undo(annotator)
        except LabelError as exc:
            assert exc.status == 409
    current = s.current_labels()
    assert current == _reference_current(s.events())
    assert s.progress().labeled == len(current)
    assert s.rebuild_current() == len(current) and s.current_labels() == current


def test_settings_left_out_are_the_conf_values(store):
    """``synchronous`` and ``lease_seconds`` left out take ``conf/labeler/default.yaml``'s values."""
    from pipeline.config import load_group

    conf = load_group("labeler/default")
    assert (
        store._conn().execute("PRAGMA synchronous").fetchone()[0]
        == {"NORMAL": 1, "FULL": 2, "EXTRA": 3}[conf["synchronous"]]
    )
    store.lease("alice", n=1, now=1000.0)
    (expires,) = store._conn().execute("SELECT expires FROM leases").fetchone()
    assert expires == 1000.0 + conf["lease_seconds"]
