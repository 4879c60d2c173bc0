"""pipeline.engine: where a step runs, and a job's deferred Ray start."""

from __future__ import annotations

import pytest

from pipeline import engine


@pytest.fixture(autouse=True)
def _clean_state():
    saved = dict(engine._STATE)
    yield
    engine._STATE.clear()
    engine._STATE.update(saved)


def test_auto_runs_small_known_inputs_in_process_and_the_rest_on_ray():
    engine.set_cluster(False)
    assert engine.choose_engine("auto", 2000, 2000, what="embed") == "local"
    assert engine.choose_engine("auto", 2001, 2000, what="embed") == "ray"
    assert engine.choose_engine("auto", None, 2000, what="embed") == "ray"  # tar shards: count unknown
    assert engine.choose_engine("auto", 10, 0, what="embed") == "ray"  # threshold 0: never local
    assert engine.choose_engine("ray", 1, 2000, what="embed") == "ray"
    assert engine.choose_engine("local", 10**9, 2000, what="embed") == "local"


def test_a_job_on_a_cluster_keeps_auto_on_ray():
    engine.set_cluster(True)
    assert engine.choose_engine("auto", 5, 2000, what="embed") == "ray"
    assert engine.choose_engine("local", 5, 2000, what="embed") == "local"  # explicit choice wins


def test_unknown_engine_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"embed.engine=spark: choose one of auto, ray, local"):
        engine.choose_engine("spark", 5, 2000, what="embed")


def test_deferred_start_runs_once_and_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "ray_running", lambda: bool(calls))
    engine.set_ray_starter(lambda: calls.append("start"))
    assert calls == []  # registering starts nothing
    engine.ensure_ray()
    engine.ensure_ray()
    assert calls == ["start"]


def test_ensure_ray_without_a_starter_does_nothing(monkeypatch):
    monkeypatch.setattr(engine, "ray_running", lambda: False)
    engine.set_ray_starter(None)
    engine.ensure_ray()  # a library user: Ray starts on first use, as Ray does
