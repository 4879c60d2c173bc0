"""Pure-Python GIBS WMTS REST client: parallel tile downloads with retries, backoff, timeouts, resume.

Tile URL (GIBS REST binding)::

    {base_url}/{layer}/default/{date}/{tile_matrix_set}/{level}/{row}/{col}.{ext}

A tile is written to the cache (``<cache_dir>/<layer>/<date>/<tms>/<level>/<row>/<col>.<ext>``,
atomically: temp file + rename) only after its body decoded completely to an image of the expected
size, so slow responses (timeouts), 5xx answers and truncated bodies are retried and, when retries
run out, reported as failures; they never land on disk as tiles. Tiles already in the cache are
skipped (resume). 4xx answers other than 408/429 are permanent (e.g. a date outside the layer's
coverage) and are not retried.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field

import httpx

from pipeline.atomic import atomic_path
from pipeline.satellite.codec import decode_rgb_array

log = logging.getLogger(__name__)

URL_TEMPLATE = "{base_url}/{layer}/default/{date}/{tile_matrix_set}/{level}/{row}/{col}.{ext}"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class TileRequest:
    """One WMTS tile of one layer and date."""

    layer: str
    date: str
    tile_matrix_set: str
    level: int
    row: int
    col: int
    ext: str = "jpg"

    @property
    def relpath(self) -> str:
        return f"{self.layer}/{self.date}/{self.tile_matrix_set}/{self.level}/{self.row}/{self.col}.{self.ext}"


@dataclass
class DownloadReport:
    """Outcome of :meth:`WMTSClient.download`: tiles fetched, found in cache, or failed (with reason)."""

    fetched: list[TileRequest] = field(default_factory=list)
    cached: list[TileRequest] = field(default_factory=list)
    failed: list[tuple[TileRequest, str]] = field(default_factory=list)
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


class TileError(Exception):
    """A tile could not be fetched; ``retryable`` says whether another attempt may succeed."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable
        self.attempts = 1


class WMTSClient:
    """Fetches WMTS tiles over HTTP with a thread pool.

    ``timeout_s`` bounds each request (connect and read); attempt ``k`` (0-based) that fails
    retryably waits ``min(backoff_max_s, backoff_s * 2**k) * U(0.5, 1)`` seconds (or the server's
    ``Retry-After``) before the next, up to ``retries`` extra attempts.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        backoff_max_s: float,
        concurrency: int,
        tile_size: int | None = None,
        url_template: str = URL_TEMPLATE,
        seed: int = 0,
        headers: dict[str, str] | None = None,
    ):
        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("need concurrency >= 1, retries >= 0, timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.concurrency = int(concurrency)
        self.tile_size = tile_size
        self.url_template = url_template
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._headers = {"User-Agent": "strata-gibs/0.1", **(headers or {})}

    def url(self, req: TileRequest) -> str:
        return self.url_template.format(
            base_url=self.base_url,
            layer=req.layer,
            date=req.date,
            tile_matrix_set=req.tile_matrix_set,
            level=req.level,
            row=req.row,
            col=req.col,
            ext=req.ext,
        )

    def _get_once(self, http: httpx.Client, req: TileRequest) -> bytes:
        url = self.url(req)
        try:
            resp = http.get(url)
        except httpx.TimeoutException as exc:
            raise TileError(f"timeout after {self.timeout_s}s: {type(exc).__name__}", retryable=True) from exc
        except httpx.TransportError as exc:  # connection reset, incomplete body (Content-Length mismatch), ...
            raise TileError(f"transport error: {type(exc).__name__}: {exc}", retryable=True) from exc
        if resp.status_code != 200:
            retryable = resp.status_code in RETRYABLE_STATUS
            raise TileError(f"HTTP {resp.status_code}: {resp.text[:200]!r}", retryable=retryable)
        body = resp.content
        ctype = resp.headers.get("content-type", "")
        if ctype and not ctype.startswith("image/"):
            raise TileError(f"not an image ({ctype}): {body[:200]!r}", retryable=False)
        try:
            arr = decode_rgb_array(body)
        except Exception as exc:  # truncated or corrupt body
            raise TileError(f"undecodable body ({len(body)} bytes): {exc}", retryable=True) from exc
        if self.tile_size and arr.shape[:2] != (self.tile_size, self.tile_size):
            raise TileError(f"tile is {arr.shape[1]}x{arr.shape[0]}, expected {self.tile_size}", retryable=False)
        return body

    def _delay(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = 0.5 + 0.5 * self._rng.random()
        return min(self.backoff_max_s, self.backoff_s * 2**attempt) * jitter

    def fetch(self, http: httpx.Client, req: TileRequest) -> tuple[bytes, int]:
        """Validated tile bytes and the number of attempts used; raises :class:`TileError`."""
        for attempt in range(self.retries + 1):
            try:
                return self._get_once(http, req), attempt + 1
            except TileError as exc:
                if not exc.retryable or attempt == self.retries:
                    exc.args = (f"{exc.args[0]} (after {attempt + 1} attempts)",)
                    exc.attempts = attempt + 1
                    raise
                log.debug("retrying %s after: %s", self.url(req), exc)
                time.sleep(self._delay(attempt))
        raise AssertionError("unreachable")

    def download(self, requests: list[TileRequest], cache_dir: str) -> DownloadReport:
        """Fetch every tile not already in ``cache_dir``, ``concurrency`` at a time."""
        report = DownloadReport()
        todo = []
        for req in dict.fromkeys(requests):  # de-duplicated, order kept
            if os.path.exists(os.path.join(cache_dir, req.relpath)):
                report.cached.append(req)
            else:
                todo.append(req)
        if not todo:
            return report
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        with (
            httpx.Client(timeout=self.timeout_s, limits=limits, headers=self._headers, follow_redirects=True) as http,
            cf.ThreadPoolExecutor(self.concurrency) as pool,
        ):
            futures = {pool.submit(self.fetch, http, req): req for req in todo}
            for fut in cf.as_completed(futures):
                req = futures[fut]
                try:
                    body, attempts = fut.result()
                except TileError as exc:
                    report.failed.append((req, str(exc)))
                    report.attempts += exc.attempts
                    log.warning("tile %s failed: %s", self.url(req), exc)
                    continue
                _write_atomic(os.path.join(cache_dir, req.relpath), body)
                report.fetched.append(req)
                report.attempts += attempts
        return report


def _write_atomic(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
