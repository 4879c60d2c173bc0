"""Helpers for the multi-node and fault-tolerance tests: real UC Merced subsets, small curate
settings, and process handling limited to processes this test session started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
ATTEMPTS = 6  # Ray node startups retried on a heavily shared machine
NO_AUTH = {"RAY_AUTH_MODE": "disabled"}

# Small but real: 4 images per class, blocks of 8 images so the embedding runs as a stream of
# batches (there is something left to retry when an actor dies), 2 k-means actors.
FAULT_SETTINGS = [
    "input.files_per_unit=8",
    "input.units_per_block=1",
    "embed.image_size=64",
    "embed.batch_size=8",
    "kmeans.n_clusters=[8,2]",
    "kmeans.n_iters=[10,5]",
    "kmeans.n_resampling_steps=[2,1]",
    "kmeans.sample_size=[4,2]",
    "kmeans.n_actors=2",
    "sample.target_size=30",
    "embed.engine=ray",  # these tests are about Ray's actors: small inputs would otherwise run in process
    "kmeans.in_process=false",
]


def write_subset(datasets_dir: Path, root: Path, per_class: int) -> Path:
    """``per_class`` real UC Merced images of every class as a ``<label>/<file>`` folder tree."""
    table = pq.read_table(datasets_dir / "ucmerced", columns=["id", "label", "image"])
    seen: dict[str, int] = {}
    for label, image_id, image in zip(*(table.column(c).to_pylist() for c in ("label", "id", "image"))):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / image_id).write_bytes(image)
    return root


def curate_config(input_path: Path, run_dir: Path, *extra: str) -> dict:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("curate", overrides=[f"input.path={input_path}", f"run_dir={run_dir}", *FAULT_SETTINGS, *extra])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this session (the OS may reuse a released
    ephemeral port at once, and Ray refuses two components on one port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode(errors="replace")


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``root`` (Ray workers show ``ray::Class``)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = _ppid(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        try:
            out[pid] = _cmdline(pid)
        except OSError:
            continue
        stack += children.get(pid, [])
    return out


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (a temp dir unique to this test)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text in _cmdline(int(entry)):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def node_ports() -> list[str]:
    """Free ports for every per-node Ray server. The defaults (the dashboard agent's 52365 above
    all) are taken by other Ray instances on a shared machine; a dashboard agent that cannot bind
    never reports its port and the raylet aborts ("timed out during startup")."""
    names = (
        "node-manager-port",
        "object-manager-port",
        "metrics-export-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
    )
    return [f"--{name}={free_port()}" for name in names]


def start_node(cmd: list[str], env: dict, log: Path, temp_dir: str, joined: Callable[[], bool]) -> subprocess.Popen:
    """Run `ray start --block ...` until ``joined()``; a failed start is cleaned up and retried
    (Ray gives a raylet a fixed 30 s to register, which a heavily loaded machine can miss)."""
    for _ in range(ATTEMPTS):
        with open(log, "a") as fh:
            proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda proc=proc: joined() or proc.poll() is not None, 300, 1.0, "ray node")
        if proc.poll() is None:
            return proc
        kill_pids(processes_mentioning(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
    pytest.fail(f"ray node did not start in {ATTEMPTS} attempts:\n{log.read_text()[-3000:]}")


def stop_nodes(procs: list[subprocess.Popen], temp_dirs: list[str]) -> None:
    """Stop nodes started by :func:`start_node`: SIGTERM (``--block`` stops its node's processes),
    then SIGKILL of their process groups and of anything still running from their temp dirs."""
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for d in temp_dirs:
        kill_pids(processes_mentioning(d))
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class LocalHead:
    address: str  # GCS address for ray.init / RAY_ADDRESS
    pid: int  # the `ray start --block` process: every Ray process of the node descends from it


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A 2-CPU single-node Ray of this test session, started with `ray start --head` on free ports."""
    temp_dir = f"/tmp/rt-f{uuid.uuid4().hex[:6]}"
    port = free_port()
    # token authentication is exercised by test_multinode.py; here the drivers (this process and
    # the job subprocesses) connect without one
    env = {**os.environ, **NO_AUTH, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--object-store-memory=300000000",
        "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}",
        f"--temp-dir={temp_dir}",
        *node_ports(),
    ]
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    proc = start_node(cmd, env, log, temp_dir, lambda: "Ray runtime started" in log.read_text())
    try:
        yield LocalHead(f"127.0.0.1:{port}", proc.pid)
    finally:
        import ray

        ray.shutdown()
        stop_nodes([proc], [temp_dir])


@pytest.fixture(scope="session")
def ray_connected(ray_head):
    """This process connected to :func:`ray_head` as a driver (``ray_session`` then reuses it)."""
    import ray

    if not ray.is_initialized():
        os.environ.update(NO_AUTH)
        ray.init(address=ray_head.address, log_to_driver=False)
    return ray_head
