"""One progress facility for every long step: embedding, k-means, SSL epochs, active rounds.

Each step reports through a :class:`Progress`: a line on the terminal (rewritten in place on a
TTY, plain lines otherwise) and the same line appended to ``<run_dir>/progress.log``, so a run on a
cluster can be followed with ``tail -f`` or ``ray job logs``. The rate is ``done / elapsed`` and the
ETA extrapolates the mean time per unit so far::

    eta = (total - done) * elapsed / done

Log records go through :class:`ProgressLogHandler` (installed by :func:`configure_logging`, which
every job calls): on a TTY it clears the in-place progress line, writes the record and redraws the
line, so a log line never lands in the middle of a progress line. :func:`configure_logging` also
silences libraries' INFO chatter (FAISS's loader lines, Ray Data's progress notices) unless
``verbose``.

Use it where the loop runs: the driver (k-means, active rounds) or rank 0 of a Ray Train loop
(SSL epochs; its terminal output reaches the driver through Ray's log forwarding, and the run
directory is on storage every node reaches)::

    with Progress("kmeans/level_1/step_0", total=n_iters, run=run, unit="iter") as bar:
        for it in range(n_iters):
            ...
            bar.update(inertia=inertia)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

from pipeline.artifacts import PROGRESS_LOG
from pipeline.rundir import RunDir

T = TypeVar("T")


def format_seconds(seconds: float) -> str:
    """``7.2s``, ``3m05s``, ``2h04m`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """Progress of ``total`` units of work named ``name``, with elapsed time, rate and ETA.

    Args:
        name: what is running, e.g. ``"embed"``, ``"kmeans/level_1"``, ``"ssl/epochs"``, ``"active/rounds"``.
        total: number of units (images, iterations, epochs, rounds); must be >= 0; None when unknown
            (the line then shows the count and the rate, no percentage or ETA).
        run: run directory (or its path) whose ``progress.log`` receives every logged line;
            None logs to the terminal only.
        unit: the unit's name in the printed line.
        stream: terminal stream (default ``sys.stderr``); None prints nothing.
        min_interval: seconds between two redraws of the in-place line on a TTY.
        log_interval: seconds between two logged lines (``progress.log``, and the terminal when it is
            not a TTY); default ``min_interval``. The first and the last line are always logged.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        total: int | None,
        *,
        run: RunDir | str | None = None,
        unit: str = "it",
        stream: TextIO | None = sys.stderr,
        min_interval: float = 1.0,
        log_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total is not None and total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        self.name = name
        self.total = None if total is None else int(total)
        self.unit = unit
        self.stream = stream
        self.min_interval = float(min_interval)
        self.log_interval = self.min_interval if log_interval is None else float(log_interval)
        self.clock = clock
        self.run = RunDir(run) if isinstance(run, str) else run
        self.done = 0
        self.metrics: dict[str, Any] = {}
        self.start = clock()
        self._last_draw: float | None = None
        self._last_log: float | None = None
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._closed = False

    # ---- numbers -------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float:
        """Seconds left: ``(total - done) * elapsed / done`` (``inf`` before the first unit or
        when the total is unknown)."""
        if self.total is None or self.done == 0 and self.total > 0:
            return math.inf
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) * self.elapsed / self.done

    def rate(self) -> float:
        """Units per second so far: ``done / elapsed``."""
        elapsed = self.elapsed
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The status line, e.g.
        ``kmeans/level_1 12/20 iter (60%) elapsed 3.1s eta 2.1s 3.87 iter/s inertia=41.2``;
        with an unknown total: ``embed 1200 img elapsed 31.0s 38.7 img/s``."""
        if self.total is None:
            head = [f"{self.name} {self.done} {self.unit}", f"elapsed {format_seconds(self.elapsed)}"]
        else:
            pct = 100.0 * self.done / self.total if self.total else 100.0
            head = [
                f"{self.name} {self.done}/{self.total} {self.unit} ({pct:.0f}%)",
                f"elapsed {format_seconds(self.elapsed)}",
                f"eta {format_seconds(self.eta())}",
            ]
        parts = [*head, f"{self.rate():.3g} {self.unit}/s"]
        parts += [f"{k}={_format_metric(v)}" for k, v in self.metrics.items()]
        return " ".join(parts)

    # ---- updates -------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def update(self, n: int = 1, **metrics: Any) -> None:
        """Record ``n`` more finished units and the latest ``metrics`` (loss, inertia, f1, ...)."""
        if self._closed:
            raise RuntimeError(f"progress {self.name!r} is closed")
        self.done = self.done + int(n) if not self.total else min(self.total, self.done + int(n))
        self.metrics.update(metrics)
        now = self.clock()
        final = self.finished
        log_due = self._last_log is None or final or now - self._last_log >= self.log_interval
        draw_due = self._tty and (self._last_draw is None or now - self._last_draw >= self.min_interval)
        if log_due or draw_due:
            self._emit(final=final, log=log_due)

    def close(self) -> None:
        """Emit the final line (if not already) and end the terminal line."""
        if self._closed:
            return
        if self._last_log is None or not self.finished:
            self._emit(final=True, log=True)
        self._closed = True

    def _emit(self, final: bool, log: bool) -> None:
        global _live
        now = self.clock()
        self._last_draw = now
        text = self.line()
        if self.stream is not None:
            with _terminal:
                if self._tty:
                    self.stream.write(_CLEAR + text + ("\n" if final else ""))
                    _live = None if final else self
                elif log:
                    self.stream.write(text + "\n")
                self.stream.flush()
        if log:
            self._last_log = now
            if self.run is not None:
                stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                append_log(self.run, f"{stamp} {text}")

    def _clear(self) -> None:
        """Erase the in-place line (before a log record is written)."""
        self.stream.write(_CLEAR)
        self.stream.flush()

    def _redraw(self) -> None:
        self.stream.write(self.line())
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_CLEAR = "\r\x1b[2K"  # carriage return + erase the whole line
_terminal = threading.RLock()  # one writer at a time on the terminal: progress lines and log records
_live: Progress | None = None  # the progress whose line is currently drawn in place on a TTY


def _above_progress(emit: Callable[[logging.LogRecord], None]) -> Callable[[logging.LogRecord], None]:
    """``emit`` that clears the in-place progress line first and redraws it after the record."""

    def write(record: logging.LogRecord) -> None:
        with _terminal:
            live = _live
            if live is not None:
                live._clear()
            emit(record)
            if live is not None:
                live._redraw()

    write.above_progress = True  # type: ignore[attr-defined]
    return write


class ProgressLogHandler(logging.StreamHandler):
    """A console log handler that never writes into the in-place progress line: it clears the
    line, writes the record on its own line, then redraws the progress line below it."""

    def emit(self, record: logging.LogRecord) -> None:
        _above_progress(super().emit)(record)


# Libraries whose records read like problems to a user, and the least level shown unless verbose:
# "Loading faiss with AVX2 support." (INFO), Ray Data's "Progress bars disabled" (WARNING).
QUIET_LOGGERS = {
    "faiss": logging.WARNING,
    "faiss.loader": logging.WARNING,
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "PIL": logging.WARNING,
    "ray.data._internal.progress": logging.ERROR,
}


# Loggers that write to the console with handlers of their own (not through the root logger).
OWN_CONSOLE_LOGGERS = ("ray", "ray.data")


def configure_logging(verbose: bool = False) -> None:
    """Route the console log handlers through :class:`ProgressLogHandler` (Ray's and Ray Data's own
    console handlers too, once they exist: call again after importing them) and, unless ``verbose``,
    keep libraries' INFO records (``QUIET_LOGGERS``) off the console. Idempotent."""
    root = logging.getLogger()
    for i, handler in enumerate(root.handlers):
        if type(handler) is logging.StreamHandler:  # console handlers only (FileHandler is a subclass)
            routed = ProgressLogHandler(handler.stream)
            routed.setLevel(handler.level)
            routed.setFormatter(handler.formatter)
            routed.filters = list(handler.filters)
            root.handlers[i] = routed
    for name in OWN_CONSOLE_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if console and not getattr(handler.emit, "above_progress", False):
                handler.emit = _above_progress(handler.emit)  # type: ignore[method-assign]
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)


def track(items: Iterable[T], name: str, total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """Yield ``items`` while reporting one unit per item (``total`` defaults to ``len(items)``)."""
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(name, total, **kwargs) as bar:
        for item in items:
            yield item
            bar.update()


def append_log(run: RunDir, line: str) -> None:
    """Append one line to ``<run_dir>/progress.log`` (object stores without append: rewrite)."""
    path = run.local(PROGRESS_LOG)
    run.fs.makedirs(run.local(), exist_ok=True)
    try:
        with run.fs.open(path, "a") as fh:
            fh.write(line + "\n")
    except (NotImplementedError, ValueError):
        old = run.fs.cat_file(path).decode() if run.fs.exists(path) else ""
        with run.fs.open(path, "w") as fh:
            fh.write(old + line + "\n")


def read_log(run: RunDir, last: int | None = None) -> list[str]:
    """Lines of ``progress.log`` (the ``last`` ones only when given); empty when there is none."""
    path = run.local(PROGRESS_LOG)
    if not run.fs.exists(path):
        return []
    lines = run.fs.cat_file(path).decode().splitlines()
    return lines[-last:] if last else lines
