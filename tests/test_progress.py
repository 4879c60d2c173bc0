"""The one progress facility: line format (count, rate, ETA), log records that never land inside an
in-place progress line, libraries' INFO noise off unless verbose, the embed step's progress from
the Parquet files its write has finished, and the one-line error of a local Ray that cannot start."""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.progress import Progress, ProgressLogHandler, configure_logging, read_log
from pipeline.rundir import RunDir


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    """A TTY stream whose screen is what a terminal shows: ``\\r\\x1b[2K`` erases the current line."""

    def isatty(self) -> bool:
        return True

    def screen(self) -> list[str]:
        lines, current = [], ""
        for chunk in self.getvalue().split("\n"):
            current = chunk.split("\r\x1b[2K")[-1]
            lines.append(current)
        return lines


def test_line_shows_count_rate_and_eta_and_an_unknown_total_shows_count_and_rate():
    clock = Clock()
    bar = Progress("embed", 100, unit="img", stream=None, clock=clock)
    clock.t = 10.0
    bar.update(40)
    assert bar.line() == "embed 40/100 img (40%) elapsed 10.0s eta 15.0s 4 img/s"
    open_ended = Progress("embed", None, unit="img", stream=None, clock=clock)
    clock.t = 14.0
    open_ended.update(8)
    assert open_ended.line() == "embed 8 img elapsed 4.0s 2 img/s"
    with pytest.raises(ValueError, match="must be >= 0"):
        Progress("embed", -3)


def test_a_log_record_is_written_above_the_in_place_progress_line():
    clock, term = Clock(), Terminal()
    logger = logging.getLogger("strata.test_progress")
    handler = ProgressLogHandler(term)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with Progress("kmeans/level_1", 4, unit="step", stream=term, min_interval=0.0, clock=clock) as bar:
            clock.t = 1.0
            bar.update(non_empty=20)
            logger.warning("shard lost; recomputing")
            clock.t = 2.0
            bar.update(3)
        logger.warning("done")
    finally:
        logger.removeHandler(handler)
    screen = term.screen()
    # every record on a line of its own; the progress line redrawn below it, then finished
    assert screen[0] == "[WARNING] shard lost; recomputing"
    assert screen[1].startswith("kmeans/level_1 4/4 step (100%)")
    assert screen[2] == "[WARNING] done"
    assert all("non_empty=20[" not in line for line in screen)


def test_tty_redraws_often_but_progress_log_gets_a_line_per_log_interval(tmp_path):
    clock, term = Clock(), Terminal()
    run = RunDir(str(tmp_path / "run"))
    with Progress("embed", 50, run=run, unit="img", stream=term, min_interval=0.5, log_interval=10.0, clock=clock) as b:
        for _ in range(50):
            clock.t += 0.5
            b.update()
    logged = read_log(run)
    # t=0.5 (first), t=10.5, t=20.5 and the final t=25.0
    assert [line.split()[2] for line in logged] == ["1/50", "21/50", "41/50", "50/50"]
    assert term.getvalue().count("\r\x1b[2K") == 50  # one redraw per 0.5 s
    assert logged[-1].endswith("embed 50/50 img (100%) elapsed 25.0s eta 0.0s 2 img/s")


def test_configure_logging_routes_console_handlers_and_quiets_library_info(tmp_path):
    root = logging.getLogger()
    quiet = ("faiss.loader", "ray.data._internal.progress")
    saved = root.handlers[:], root.level, [logging.getLogger(name).level for name in quiet]
    console, file = logging.StreamHandler(io.StringIO()), logging.FileHandler(tmp_path / "job.log")
    root.handlers[:] = [console, file]
    root.setLevel(logging.INFO)
    try:
        configure_logging(verbose=False)
        assert isinstance(root.handlers[0], ProgressLogHandler) and root.handlers[0].stream is console.stream
        assert root.handlers[1] is file
        logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
        logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled. To enable, ...")
        logging.getLogger("strata").info("started local Ray")
        shown = root.handlers[0].stream.getvalue()
        assert "started local Ray" in shown and "Loading faiss" not in shown and "Progress bars" not in shown
        configure_logging(verbose=True)
        logging.getLogger("faiss.loader").info("Loading faiss with AVX2 support.")
        assert "Loading faiss" in root.handlers[0].stream.getvalue()
    finally:
        file.close()
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in zip(quiet, saved[2]):
            logging.getLogger(name).setLevel(level)


def test_embed_progress_counts_the_rows_of_finished_output_files(tmp_path):
    from pipeline.embed.stage import _WrittenRows

    run = RunDir(str(tmp_path / "run"))
    out = tmp_path / "staged"
    bar = Progress("embed", 12, run=run, unit="img", stream=None, min_interval=0.0)
    with _WrittenRows(str(out), bar, poll_seconds=3600) as follow:  # polled by hand below
        assert follow.poll() == 0  # nothing written yet: no folder
        out.mkdir()
        pq.write_table(pa.table({"id": list("abcde")}), out / "0.parquet")
        (out / "1.parquet").write_bytes(b"PAR1 half-written")  # a write in progress is not counted
        assert follow.poll() == 5
        pq.write_table(pa.table({"id": list("fghijkl")}), out / "1.parquet")
        follow._report()
        assert bar.done == 12
    lines = read_log(run)
    assert [line.split()[2] for line in lines] == ["12/12"]
    assert " embed 12/12 img (100%) " in lines[-1]


def test_count_images_from_the_listing(tmp_path, datasets_dir):
    from pipeline.embed.stage import count_images
    from pipeline.io.sources import InputConfig

    for i in range(5):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / "a" / f"{i}.jpg").write_bytes(b"x")
    assert count_images(InputConfig.from_dict({"path": str(tmp_path / "imgs"), "files_per_unit": 2})) == 5
    assert count_images(InputConfig.from_dict({"path": str(tmp_path / "imgs"), "limit": 3})) == 3
    rows = pq.ParquetFile(next((datasets_dir / "ucmerced").glob("*.parquet"))).metadata.num_rows
    files = sorted((datasets_dir / "ucmerced").glob("*.parquet"))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert rows <= total == count_images(InputConfig.from_dict({"path": str(datasets_dir / "ucmerced")}))


def test_a_local_ray_that_cannot_start_says_why_in_one_line_after_one_retry(monkeypatch):
    import ray

    from jobs._ray import LocalRayError, start_local_ray

    calls: list[dict] = []

    def timing_out(**kwargs):
        calls.append(kwargs)
        raise Exception("The current node timed out during startup. This could happen because ...")  # noqa: TRY002

    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(LocalRayError) as err:
        start_local_ray(timing_out, {"address": "local"})
    assert len(calls) == 2
    message = str(err.value)
    assert "\n" not in message and "ray.address=auto" in message and "port" in message

    def other_failure(**kwargs):
        raise ValueError("num_cpus must be >= 0")

    with pytest.raises(ValueError, match="num_cpus"):  # anything else is not retried nor reworded
        start_local_ray(other_failure, {})


def test_ray_data_progress_block_only_with_verbose(monkeypatch):
    import ray
    from omegaconf import OmegaConf

    from jobs._ray import init_ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # the settings, not a Ray start
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars
    try:
        for verbose in (True, False):
            init_ray(OmegaConf.create({"verbose": verbose, "ray": {"address": None, "log_to_driver": True}}))
            assert ctx.enable_progress_bars is verbose
    finally:
        ctx.enable_progress_bars = saved


def test_ray_s_own_console_handlers_also_write_above_the_progress_line(monkeypatch):
    import pipeline.progress as progress

    class PlainHandler(logging.StreamHandler):  # like Ray's PlainRayHandler: its own logger, no propagation
        pass

    clock, term = Clock(), Terminal()
    logger = logging.getLogger("strata.test_progress.ray_like")
    handler = PlainHandler(term)
    logger.addHandler(handler)
    logger.propagate = False
    monkeypatch.setattr(progress, "OWN_CONSOLE_LOGGERS", (logger.name,))
    try:
        configure_logging()
        configure_logging()  # idempotent: wrapped once
        with Progress("embed", 84, unit="img", stream=term, min_interval=0.0, clock=clock) as bar:
            clock.t = 1.0
            bar.update(72)
            logger.warning("Dataset execution finished in 22.91 seconds")
            bar.update(12)
    finally:
        logger.removeHandler(handler)
    screen = term.screen()
    assert screen[0] == "Dataset execution finished in 22.91 seconds"
    assert screen[1].startswith("embed 84/84 img (100%)")
