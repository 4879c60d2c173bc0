"""A local WMTS server on 127.0.0.1 serving GIBS-style REST tiles cut from real images.

The ground "world" tile at ``(level, row, col)`` is a real dataset image (chosen by a hash of the
tile address) resized to the tile size; ``defect(date, level, row, col, rgb) -> rgb`` may paint
per-date clouds or gaps on it. ``faults[relpath]`` is a list of actions consumed one per request
(``"500"``, ``"slow"`` (answer only after ``stop()`` or ``slow_s``, so any client timeout below
``slow_s`` expires, however loaded the machine), ``"truncate"`` (announce the full length, send half,
close), ``"garbage"`` (200 with non-image bytes)); once exhausted the tile is served normally.
``capabilities`` (bytes), when set, is served at ``.../1.0.0/WMTSCapabilities.xml`` (requests counted
under ``"capabilities"``).
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


class WMTSServer:
    def __init__(
        self,
        images: list[np.ndarray],
        tile_size: int = 512,
        quality: int = 95,
        defect: Callable[[str, int, int, int, np.ndarray], np.ndarray] | None = None,
        slow_s: float = 1.5,
    ):
        self.images = [np.asarray(Image.fromarray(im).resize((tile_size, tile_size), Image.BILINEAR)) for im in images]
        self.tile_size, self.quality, self.defect, self.slow_s = tile_size, quality, defect, slow_s
        self.faults: dict[str, list[str]] = {}
        self.capabilities: bytes | None = None
        self.requests: Counter[str] = Counter()
        self._cache: dict[tuple, bytes] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/wmts/epsg4326/best"

    def start(self) -> WMTSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def tile_rgb(self, date: str, level: int, row: int, col: int) -> np.ndarray:
        rgb = self.images[(row * 7919 + col * 104729 + level) % len(self.images)]
        return rgb if self.defect is None else self.defect(date, level, row, col, rgb)

    def tile_bytes(self, date: str, level: int, row: int, col: int) -> bytes:
        key = (date, level, row, col)
        with self._lock:
            if key not in self._cache:
                buf = io.BytesIO()
                Image.fromarray(self.tile_rgb(date, level, row, col)).save(buf, format="JPEG", quality=self.quality)
                self._cache[key] = buf.getvalue()
            return self._cache[key]

    def _next_fault(self, relpath: str) -> str | None:
        with self._lock:
            self.requests[relpath] += 1
            queue = self.faults.get(relpath)
            return queue.pop(0) if queue else None

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[-2:] == ["1.0.0", "WMTSCapabilities.xml"] and server.capabilities is not None:
                    server._next_fault("capabilities")
                    self.send_response(200)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(server.capabilities)))
                    self.end_headers()
                    self.wfile.write(server.capabilities)
                    return
                # wmts/epsg4326/best/{layer}/default/{date}/{tms}/{level}/{row}/{col}.jpg
                try:
                    layer, _, date, tms, level, row, last = parts[3:]
                    col, ext = last.split(".")
                    level, row, col = int(level), int(row), int(col)
                except ValueError:
                    self.send_error(400, "bad tile path")
                    return
                relpath = f"{layer}/{date}/{tms}/{level}/{row}/{col}.{ext}"
                fault = server._next_fault(relpath)
                try:
                    if fault == "500":
                        self.send_error(500, "internal error")
                        return
                    if fault == "slow":
                        server._stopping.wait(server.slow_s)
                    body = server.tile_bytes(date, level, row, col)
                    if fault == "garbage":
                        body = b"<html>not a tile</html>" * 10
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if fault == "truncate":
                        self.wfile.write(body[: len(body) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
