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


def _square_plus(offset: int, x: int) -> int:
    return offset + x * x


def test_select_engine_is_the_one_choice_and_takes_in_process_yes_no():
    engine.set_cluster(False)
    assert engine.select_engine("auto", small=True, what="x") is engine.LOCAL
    assert engine.select_engine("auto", small=False, what="x") is engine.RAY
    assert engine.select_engine("auto", small=None, what="x") is engine.RAY  # size unknown before reading
    assert engine.select_engine(True, small=False, what="kmeans.in_process") is engine.LOCAL  # in_process: true
    assert engine.select_engine(False, small=True, what="kmeans.in_process") is engine.RAY
    assert engine.engine_for("auto", 5, 10, what="x") is engine.LOCAL
    engine.set_cluster(True)
    assert engine.select_engine("auto", small=True, what="x") is engine.RAY


def test_local_engine_runs_tasks_and_actors_here_in_order():
    assert engine.LOCAL.run_tasks(_square_plus, ((x,) for x in range(5)), (1,), num_cpus=0.5) == [1, 2, 5, 10, 17]
    (box,) = engine.LOCAL.start_actors(dict, [{"a": 1}], num_cpus=1, max_restarts=3)
    assert box == {"a": 1}  # an object of this process; Ray options are ignored


@pytest.mark.slow
def test_ray_engine_gives_the_local_results_in_input_order(ray_session):
    """Ray actors through the engine: tests/test_engine_steps.py (k-means level 1)."""
    args = [(x,) for x in range(9)]  # more tasks than the in-flight limit (2 per CPU): the window slides
    assert engine.RAY.run_tasks(_square_plus, iter(args), (1,), num_cpus=0.5) == engine.LOCAL.run_tasks(
        _square_plus, args, (1,), num_cpus=0.5
    )
