"""A bounded thread pool for the search server: refuses work at once when full."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import PriorityQueue
from typing import Any


class WorkPool:
    """``workers`` threads and at most ``queue`` waiting jobs; a job beyond that is refused at once.

    Waiting jobs run cheapest first (``cost``: tiles to embed), first come first served within a
    cost, so a stream of expensive queries cannot make cheap ones wait behind all of them. A slot is
    freed when its job really ends, not when its client stops waiting, so work that is being
    abandoned still counts: the CPU the server hands out stays bounded.
    """

    def __init__(self, workers: int, queue: int, name: str = "strata-search"):
        self.workers, self.queue = workers, queue
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._jobs: PriorityQueue = PriorityQueue()
        self._order = itertools.count()
        for i in range(workers):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable[[], Any], cost: int = 0) -> Future | None:
        """The job's future, or None when ``workers + queue`` jobs are already admitted."""
        if not self._slots.acquire(blocking=False):
            return None
        future: Future = Future()
        future.add_done_callback(lambda _: self._slots.release())
        self._jobs.put((cost, next(self._order), future, fn))
        return future

    def _work(self) -> None:
        while True:
            _, _, future, fn = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue  # its client gave up while it waited
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
