"""Helpers for the multi-node and fault-tolerance tests: real UC Merced subsets, small curate
settings, and process handling limited to processes this test session started."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(scope="session")
def ray_started():
    """Start the session's local Ray (same settings as ``ray_session``) with retries: Ray gives a
    raylet a fixed 30 s to register, which a heavily shared machine can miss."""
    import ray

    for attempt in range(3):
        if ray.is_initialized():
            break
        try:
            ray.init(address="local", num_cpus=2, object_store_memory=int(3e8), include_dashboard=False, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - only the startup timeout is retried
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            ray.shutdown()
            kill_pids([p for p, cmd in descendants(os.getpid()).items() if "ray" in cmd])
    return ray
