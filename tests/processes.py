"""Running jobs as real processes: ``strata <job> ...`` with its own environment, servers on a free
port polled until they answer, and the listening address read back from the kernel."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
STRATA = str(Path(sys.executable).with_name("strata"))


def job_env(**extra: str) -> dict[str, str]:
    """The environment of a job process: Ray on loopback, no usage stats, one BLAS/OpenMP thread."""
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }
    env.pop("RAY_ADDRESS", None)  # a job connects to a cluster only when its test says so
    return env


def run_job(job: str, *overrides: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """``strata <job> overrides...`` to completion; returns stdout + stderr, fails the test on a non-zero exit."""
    proc = subprocess.run(
        [STRATA, job, *overrides], cwd=REPO, env=env or job_env(), capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"strata {job} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def start_job(job: str, *overrides: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``strata <job> overrides...`` in the background, stdout and stderr to ``log``."""
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [STRATA, job, *overrides], cwd=REPO, env=env or job_env(), stdout=fh, stderr=subprocess.STDOUT
        )


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM the process (SIGKILL if it lingers); its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> httpx.Response:
    """Poll ``url`` until the server answers (any status); fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no answer from {url} in {timeout} s:\n{log.read_text(errors='replace')[-4000:]}"
                ) from None
            time.sleep(0.3)


def wait_line(log: Path, prefix: str, proc: subprocess.Popen, timeout: float = 60) -> list[str]:
    """Lines of ``log`` from the first one starting with ``prefix`` on, once the process has written it."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                return lines[i:]
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no line starting with {prefix!r}:\n{chr(10).join(lines)[-4000:]}")
        time.sleep(0.1)


def listen_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on ``port`` (``/proc/net/tcp*``, Linux)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, words))
    return found
