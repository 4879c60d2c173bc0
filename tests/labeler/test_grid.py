"""Grid pages: similar images per page, page labels all-or-none, page undo replayed from the log, the HTTP API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.artifacts import cluster_points_part
from pipeline.config import load_group
from pipeline.io.tables import embeddings_to_arrow, write_parquet_atomic
from pipeline.kmeans.hierarchical import LevelResult
from pipeline.kmeans.levels import save_step, write_clusters_json
from pipeline.labeler import LabelClient, LabelError, LabelerSettings, LabelStore, serve
from pipeline.labeler.grid import Clusters, Neighbours, ranker_for_run
from pipeline.labeler.job import start_server, starter_reference
from pipeline.rundir import RunDir

from .test_store import _reference_current


def class_vectors(ids: list[str]) -> Neighbours:
    """Embeddings where an id's class folder decides its direction (plus a little noise)."""
    rng = np.random.default_rng(1)
    classes = sorted({i.split("/")[0] for i in ids})
    x = np.eye(len(classes), 8, dtype=np.float32)[[classes.index(i.split("/")[0]) for i in ids]]
    return Neighbours(ids, x + rng.normal(0, 0.05, x.shape).astype(np.float32))


def test_neighbours_rank_by_cosine_against_brute_force(image_files):
    ids, _ = image_files
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(ids), 16)).astype(np.float32)
    ranked = Neighbours(ids, x)(ids[0], ids[1:] + ["not-embedded"])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    exact = dict(zip(ids[1:], unit[1:] @ unit[0]))
    sims = np.array([exact[i] for i in ranked[:-1]])
    assert sorted(ranked[:-1]) == sorted(ids[1:]) and ranked[-1] == "not-embedded"  # unknown ids last
    assert np.all(np.diff(sims) <= 1e-6)  # descending cosine
    assert ranked[:-1] == sorted(ids[1:], key=lambda i: -exact[i])
    assert Clusters(ids, [k % 3 for k in range(len(ids))])(ids[0], ids[1:7]) == [ids[3], ids[6], *ids[1:3], *ids[4:6]]


def test_grid_page_is_similar_images_and_counts_against_the_quota(tmp_path, image_files):
    ids, uris = image_files
    store = LabelStore(tmp_path / "mixed.sqlite")
    store.register(ids, uris)
    interleaved = [ids[k + c * 20] for k in range(20) for c in range(3)]  # fields, roofs, water, fields, ...
    store.enqueue(interleaved)
    similar = class_vectors(ids)
    page = store.lease("alice", n=12, similar=similar, max_held=16)
    assert len(page) == 12 and {i.split("/")[0] for i in page} == {"fields"}
    assert sorted(store.lease("alice", n=12, similar=similar, max_held=16)) == sorted(page)  # held page comes back
    bob = store.lease("bob", n=12, similar=similar, max_held=16)
    assert not set(bob) & set(page) and {i.split("/")[0] for i in bob} == {"roofs"}  # next anchor: a roof
    assert len(store.lease("alice", n=12, max_held=14)) == 12  # quota: 2 more at most, page size caps it
    assert len(store.lease("alice", n=16, max_held=14)) == 14
    plain = store.lease("carol", n=6)
    assert plain == [i for i in interleaved if i not in {*page, *bob, *store.lease("alice", n=16)}][:6]


def test_page_label_and_page_undo_replay_from_the_log(store: LabelStore):
    page = store.lease("alice", n=6)
    marks = {i: ("negative" if k in (1, 4) else "positive") for k, i in enumerate(page)}
    events, dup = store.label_page(marks, "alice", page="page-0001")
    assert not dup and len(events) == 6 and {e.page for e in events} == {"page-0001"}
    assert store.label_page(marks, "alice", page="page-0001")[1] is True  # retry: recorded once
    store.label(store.lease("alice", n=1)[0], "unsure", "alice")
    page2 = store.lease("alice", n=3)
    store.label_page(dict.fromkeys(page2, "positive"), "alice", page="page-0002")
    assert len(store.current_labels()) == 10

    undone, dup = store.undo_page("alice", request_id="undo-page-01")
    assert not dup and sorted(e.id for e in undone) == sorted(page2) and all(e.undone for e in undone)
    assert store.undo_page("alice", request_id="undo-page-01")[1] is True  # retry: undone once
    assert [e.label for e in store.undo_page("alice")[0]] == ["unsure"]  # a single label is its own page
    undone, _ = store.undo_page("alice")
    assert {e.id: e.label for e in undone} == marks  # the whole first page, with the labels it had
    assert store.current_labels() == {} and store.undo_page("alice") is None
    assert len(store.events()) == 20  # 10 labels + 10 undo events: nothing rewritten
    with pytest.raises(LabelError, match="undone"):  # a late retry of an undone page is refused
        store.label_page(marks, "alice", page="page-0001")
    assert not set(page) & set(store.lease("bob", n=60))  # undone ids are leased back to alice
    store.label_page(marks, "alice", page="page-0003")
    assert store.current_labels() == _reference_current(store.events()) == marks
    assert store.rebuild_current() == 6 and store.current_labels() == marks


def test_page_is_all_or_none(store: LabelStore, image_files):
    ids, _ = image_files
    alice = store.lease("alice", n=4)
    bob = store.lease("bob", n=1)
    with pytest.raises(LabelError) as err:  # one id held by bob: nothing of the page is written
        store.label_page({**dict.fromkeys(alice, "positive"), bob[0]: "negative"}, "alice", page="page-0001")
    assert err.value.status == 409 and store.events() == []
    with pytest.raises(LabelError, match="unknown label"):
        store.label_page({alice[0]: "maybe"}, "alice", page="page-0002")
    with pytest.raises(ValueError, match="not a label"):
        store.set_guesses({alice[0]: "maybe"})


def test_page_api_guesses_bounds_and_identity(store: LabelStore, image_files):
    ids, _ = image_files
    store.set_guesses({ids[0]: "negative"})
    settings = LabelerSettings(mode="grid", grid_size=5)
    with serve(store.path, settings=settings, port=0) as server, LabelClient(server.url, "alice") as alice:
        page = alice.page()
        assert [p["id"] for p in page] == ids[:5]
        assert [p["guess"] for p in page] == ["negative"] + ["positive"] * 4
        config = httpx.get(f"{server.url}/api/config").json()
        assert (config["mode"], config["grid_size"], config["show_ids"], config["prompt"]) == ("grid", 5, False, None)
        marks = {p["id"]: p["guess"] for p in page}
        r = alice.label_page(marks, request_id="page-req-01")
        assert r["progress"]["labeled"] == 5 and not r["duplicate"]
        assert alice.label_page(marks, request_id="page-req-01")["duplicate"] is True
        assert {p["id"]: p["guess"] for p in alice.undo_page()} == marks
        assert alice.labels() == {}
        with pytest.raises(httpx.HTTPStatusError) as err:  # page size bounded by the lease quota
            alice.page(n=17)
        assert err.value.response.status_code == 422 and "max_leased" in err.value.response.text
        with LabelClient(server.url, "alice", session="another-browser-session") as thief:
            for call in (lambda: thief.page(), lambda: thief.undo_page(), lambda: thief.label_page(marks)):
                with pytest.raises(httpx.HTTPStatusError) as err:
                    call()
                assert err.value.response.status_code == 403
        r = httpx.post(
            f"{server.url}/api/page/label",
            json={"annotator": "alice", "labels": {f"x{k}": "positive" for k in range(65)}, "request_id": "r" * 8},
            headers={"X-Strata-Session": "s"},
        )
        assert r.status_code == 422  # at most 64 labels per page request


def test_bad_grid_settings_are_one_line_errors(store: LabelStore):
    with pytest.raises(ValueError, match="labeler.grid_size must be 1..16"):
        serve(store.path, settings=LabelerSettings(mode="grid", grid_size=40), port=0)
    with pytest.raises(ValueError, match="labeler.mode must be single or grid"):
        serve(store.path, settings=LabelerSettings(mode="cards"), port=0)
    with pytest.raises(ValueError, match="labeler.grid_guess 'yes'"):
        serve(store.path, settings=LabelerSettings(grid_guess="yes"), port=0)


def test_label_server_groups_grid_pages_by_the_runs_embeddings(tmp_path, image_files):
    """``start_server(..., run)`` in grid mode: pages from the run's embeddings, on an interleaved queue."""
    ids, uris = image_files
    run = RunDir(str(tmp_path / "run"))
    x = class_vectors(ids).x.astype(np.float32)
    table = pa.table({"id": ids, "uri": uris, "embedding": embeddings_to_arrow(x)})
    write_parquet_atomic(table, run.path("embeddings", "part-00000.parquet"))
    store = LabelStore(tmp_path / "labels.sqlite")
    store.register(ids, uris)
    store.enqueue([ids[k + c * 20] for k in range(20) for c in range(3)])
    cfg = {**load_group("labeler/default"), "port": 0, "mode": "grid", "grid_size": 8, "synchronous": "NORMAL"}
    with start_server(store, cfg, run) as server, LabelClient(server.url, "gina") as gina:
        page = [p["id"] for p in gina.page()]
        assert len(page) == 8 and {i.split("/")[0] for i in page} == {"fields"}


def test_strata_active_asks_about_the_starter(tmp_path, image_files):
    ids, uris = image_files
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("active", overrides=["labeler=human"]), resolve=True)
    assert cfg["labeler"]["prompt"] == "Is this like the reference?" and cfg["labeler"]["show_ids"] is False
    store = LabelStore(tmp_path / "labels.sqlite")
    store.register(ids, uris)
    assert starter_reference(store, {"id": [ids[3], ids[4]]}) == ids[3]
    ref = starter_reference(store, {"image": uris[7]})
    assert ref == f"reference/{Path(uris[7]).name}" and store.uri(ref) == uris[7]
    assert starter_reference(store, {}) is None


def test_runs_without_embeddings_group_pages_by_level_1_cluster(tmp_path, image_files):
    ids, _ = image_files
    run = RunDir(str(tmp_path / "run"))
    assert ranker_for_run(run.root) is None  # neither embeddings nor clusters: queue order
    assignments = np.array([k % 3 for k in range(len(ids))])  # deliberately not the class folders
    order = np.argsort(assignments, kind="stable")
    offsets = np.searchsorted(assignments[order], np.arange(4))
    zeros = np.zeros(len(ids), np.float32)
    save_step(run, 1, 0, LevelResult(np.zeros((3, 2), np.float32), assignments, zeros, offsets, order, zeros))
    write_clusters_json(run, {"levels": [{"level": 1, "final_step": 0}]})
    write_parquet_atomic(pa.table({"index": list(range(len(ids))), "id": ids}), cluster_points_part(run, 0))
    ranked = ranker_for_run(run.root)(ids[0], ids[1:10])
    assert ranked == [ids[3], ids[6], ids[9], ids[1], ids[2], ids[4], ids[5], ids[7], ids[8]]


def test_a_store_made_before_grid_pages_gains_the_page_column(tmp_path, image_files):
    ids, uris = image_files
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, label TEXT NOT NULL, "
        "annotator TEXT NOT NULL, timestamp REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0, "
        "undoes INTEGER REFERENCES events(seq), request_id TEXT UNIQUE);"
        f"INSERT INTO events (id, label, annotator, timestamp) VALUES ('{ids[0]}', 'positive', 'alice', 1.0);"
    )
    old.close()
    store = LabelStore(path)
    store.register(ids, uris)
    store.enqueue(ids)
    assert [(e.id, e.page) for e in store.events()] == [(ids[0], None)]
    assert store.rebuild_current() == 1 and store.current_labels() == {ids[0]: "positive"}
    store.label_page({ids[1]: "negative"}, "alice", page="page-0001")
    assert store.current_labels() == {ids[0]: "positive", ids[1]: "negative"}
