"""Progress/ETA reporter: the ETA formula, rate limiting, the run directory's progress.log."""

from __future__ import annotations

import io
import math

import pytest

from pipeline.progress import Progress, format_seconds, read_log, track
from pipeline.rundir import RunDir


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_eta_is_mean_time_per_unit_times_units_left():
    clock = Clock()
    bar = Progress("kmeans/level_1/step_0", 10, stream=None, clock=clock)
    assert bar.eta() == math.inf
    for dt in (2.0, 4.0, 3.0):  # 9 s for 3 units -> 3 s/unit, 7 left
        clock.t += dt
        bar.update()
    assert bar.eta() == pytest.approx(21.0)
    assert "3/10 it (30%)" in bar.line() and "eta 21.0s" in bar.line()
    bar.update(50)
    assert bar.done == 10 and bar.eta() == 0.0


def test_lines_go_to_terminal_and_progress_log(tmp_path):
    clock, out = Clock(), io.StringIO()
    run = RunDir(str(tmp_path / "run"))
    with Progress("ssl/epochs", 5, run=run, unit="epoch", stream=out, min_interval=6.0, clock=clock) as bar:
        for epoch in range(5):
            clock.t += 3.0
            bar.update(loss=1.0 / (epoch + 1))
    printed = out.getvalue().splitlines()
    # first line (t=3), then one once >= 6 s passed (t=9), and the final one (t=15)
    assert [p.split()[1] for p in printed] == ["1/5", "3/5", "5/5"]
    assert printed[-1].endswith("loss=0.2")
    logged = read_log(run)
    assert [line.split(" ", 1)[1] for line in logged] == printed
    assert read_log(run, last=1) == logged[-1:]


def test_close_emits_a_final_line_for_an_unfinished_loop(tmp_path):
    out = io.StringIO()
    bar = Progress("active/rounds", 4, stream=out, min_interval=1e9, clock=Clock())
    bar.update(f1=0.5)
    bar.update()
    bar.close()
    bar.close()
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["1/4", "2/4"]
    with pytest.raises(RuntimeError):
        bar.update()


def test_track_and_validation(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert list(track(range(3), "rounds", run=run, stream=None)) == [0, 1, 2]
    assert read_log(run)[-1].split()[2] == "3/3"
    with pytest.raises(ValueError):
        Progress("x", -1)
    assert [format_seconds(s) for s in (7.25, 185, 7440, math.inf)] == ["7.2s", "3m05s", "2h04m", "?"]
