"""Progress with an ETA for the driver-side loops Ray Data's bars do not cover.

k-means iterations, SSL epochs and active-learning rounds report through one :class:`Progress`:
a line on the terminal (rewritten in place on a TTY) and the same line appended to
``<run_dir>/progress.log``, so a run on a cluster can be followed with ``tail -f`` or
``ray job logs``. The ETA extrapolates the mean time per unit so far::

    eta = (total - done) * elapsed / done

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
import math
import sys
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
    """Progress of ``total`` units of work named ``name``, with elapsed time and ETA.

    Args:
        name: what is running, e.g. ``"kmeans/level_1/step_2"``, ``"ssl/epochs"``, ``"active/rounds"``.
        total: number of units (iterations, epochs, rounds); must be >= 0.
        run: run directory (or its path) whose ``progress.log`` receives every emitted line;
            None logs to the terminal only.
        unit: the unit's name in the printed line.
        stream: terminal stream (default ``sys.stderr``); None prints nothing.
        min_interval: seconds between two emitted lines; the first and the last are always emitted.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        total: int,
        *,
        run: RunDir | str | None = None,
        unit: str = "it",
        stream: TextIO | None = sys.stderr,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if total < 0:
            raise ValueError(f"progress total must be >= 0, got {total}")
        self.name = name
        self.total = int(total)
        self.unit = unit
        self.stream = stream
        self.min_interval = float(min_interval)
        self.clock = clock
        self.run = RunDir(run) if isinstance(run, str) else run
        self.done = 0
        self.metrics: dict[str, Any] = {}
        self.start = clock()
        self._last_emit: float | None = None
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._closed = False

    # ---- numbers -------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def eta(self) -> float:
        """Seconds left: ``(total - done) * elapsed / done`` (``inf`` before the first unit)."""
        if self.done >= self.total:
            return 0.0
        if self.done == 0:
            return math.inf
        return (self.total - self.done) * self.elapsed / self.done

    def line(self) -> str:
        """The status line, e.g. ``kmeans/level_1 12/20 iter (60%) elapsed 3.1s eta 2.1s inertia=41.2``."""
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [
            f"{self.name} {self.done}/{self.total} {self.unit} ({pct:.0f}%)",
            f"elapsed {format_seconds(self.elapsed)}",
            f"eta {format_seconds(self.eta())}",
        ]
        parts += [f"{k}={_format_metric(v)}" for k, v in self.metrics.items()]
        return " ".join(parts)

    # ---- updates -------------------------------------------------------------------------------
    def update(self, n: int = 1, **metrics: Any) -> None:
        """Record ``n`` more finished units and the latest ``metrics`` (loss, inertia, f1, ...)."""
        if self._closed:
            raise RuntimeError(f"progress {self.name!r} is closed")
        self.done = min(self.total, self.done + int(n)) if self.total else self.done + int(n)
        self.metrics.update(metrics)
        now = self.clock()
        first = self._last_emit is None
        if first or self.done >= self.total or now - self._last_emit >= self.min_interval:
            self._emit(final=self.done >= self.total)

    def close(self) -> None:
        """Emit the final line (if not already) and end the terminal line."""
        if self._closed:
            return
        if self._last_emit is None or self.done < self.total:
            self._emit(final=True)
        self._closed = True

    def _emit(self, final: bool) -> None:
        self._last_emit = self.clock()
        text = self.line()
        if self.stream is not None:
            if self._tty:
                self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
        if self.run is not None:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            append_log(self.run, f"{stamp} {text}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
