"""Start and stop the labeler: in this process (a uvicorn thread) or as a child process.

    handle = serve("runs/x/labels/labels.sqlite", port=0)  # 127.0.0.1, free port, no token
    handle.url, handle.stop()
    handle = serve(db, port=0, share=True)                 # all interfaces + random token
    handle.share_url                                       # http://<lan-ip>:<port>/?token=...
    handle = serve(db, port=0, subprocess=True)            # separate interpreter; .kill() = SIGKILL

``python -m pipeline.labeler --db PATH [--host H --port P --settings JSON]`` is the child's
entry point; the token travels in ``STRATA_LABELER_TOKEN``, never on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import socket
import subprocess as sp
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from pipeline.labeler.app import LabelerSettings, create_app
from pipeline.labeler.settings import conf_default
from pipeline.labeler.store import LabelStore
from pipeline.security import access_token

READY = "STRATA_LABELER_READY"
TOKEN_ENV = "STRATA_LABELER_TOKEN"


@dataclass
class LabelServer:
    """A running labeler. ``url`` is for this machine; ``share_url`` (share mode) for the LAN."""

    url: str
    host: str
    port: int
    token: str | None
    share_url: str | None = None
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _process: sp.Popen | None = field(default=None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers that authenticate a programmatic client."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: in-flight requests finish, then the port closes."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except sp.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def kill(self) -> None:
        """SIGKILL the child process (crash testing); only for ``subprocess=True``."""
        if self._process is None:
            raise RuntimeError("kill() needs a server started with subprocess=True")
        self._process.kill()
        self._process.wait()

    @property
    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LabelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def lan_address() -> str:
    """This machine's address on its default route (no packet is sent), else 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    db: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    host: str | None = None,
    port: int,
    share: bool | None = None,
    token: str | None = None,
    settings: LabelerSettings | None = None,
    synchronous: str | None = None,
    subprocess: bool = False,
    log_level: str = "warning",
    start_timeout: float = 60.0,
) -> LabelServer:
    """Serve the label store at ``db`` and return once it accepts connections.

    ``host`` defaults to ``127.0.0.1``, or to ``0.0.0.0`` (all interfaces) with ``share=True``;
    sharing, or any address beyond loopback, also requires a token (random unless given). Clients must present the token whenever
    one is set. ``port=0`` picks a free port. ``share`` / ``synchronous``: None takes
    ``labeler.share`` / ``labeler.synchronous`` of ``conf/labeler``.
    """
    share = conf_default("share") if share is None else share
    synchronous = conf_default("synchronous") if synchronous is None else synchronous
    host = host or ("0.0.0.0" if share else "127.0.0.1")
    token = access_token(host, token)[0]  # any address beyond loopback requires one
    if share and token is None:
        token = secrets.token_urlsafe(18)
    settings = dataclasses.replace(settings or LabelerSettings(), token=token, host=host)
    store = LabelStore(db, labels=labels, synchronous=synchronous)  # creates the file, checks labels
    settings.check(store.labels)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    local_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{local_host}:{bound}"
    share_url = f"http://{lan_address()}:{bound}/?token={token}" if share else None
    if subprocess:
        store.close()
        process = _spawn(store.path, sock, settings, synchronous, log_level, start_timeout)
        sock.close()
        return LabelServer(url, host, bound, token, share_url, _process=process)
    config = uvicorn.Config(create_app(store, settings), log_level=log_level, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="strata-labeler", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"labeler server did not start on {url}")
        time.sleep(0.02)
    return LabelServer(url, host, bound, token, share_url, _server=server, _thread=thread)


def _spawn(
    db: str, sock: socket.socket, settings: LabelerSettings, synchronous: str, log_level: str, start_timeout: float
) -> sp.Popen:
    """Start the child on the already-bound socket (passed by fd) and wait for its READY line."""
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop(TOKEN_ENV, None)
    if settings.token:
        env[TOKEN_ENV] = settings.token
    payload = json.dumps({k: v for k, v in dataclasses.asdict(settings).items() if k != "token"})
    cmd = [
        sys.executable,
        "-m",
        "pipeline.labeler",
        "--db",
        db,
        "--fd",
        str(sock.fileno()),
        "--settings",
        payload,
        "--synchronous",
        synchronous,
        "--log-level",
        log_level,
    ]
    process = sp.Popen(cmd, env=env, stdout=sp.PIPE, text=True, pass_fds=(sock.fileno(),))
    ready = threading.Event()

    def drain() -> None:  # keep reading so the child never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + start_timeout
    while not ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"labeler subprocess failed to start (exit code {process.poll()})")
    return process


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Strata swipe labeler server (child process)")
    parser.add_argument("--db", required=True)
    parser.add_argument("--fd", type=int, help="an already listening socket inherited from the parent")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--synchronous", default=None, help="SQLite synchronous (default: labeler.synchronous)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    settings = LabelerSettings(**json.loads(args.settings), token=os.environ.get(TOKEN_ENV) or None)
    store = LabelStore(args.db, synchronous=args.synchronous)
    sock = socket.socket(fileno=args.fd) if args.fd is not None else _bind(args.host, args.port)
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, settings), log_level=args.log_level, access_log=False, lifespan="off")
    )

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.02)
        print(f"{READY} {sock.getsockname()[1]}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
