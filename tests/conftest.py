"""Shared fixtures: one local Ray per test session, paths to the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Ray must bind loopback only (see README "Development"); set before ray is imported anywhere.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("STRATA_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """Folder holding the real labelled datasets (``ucmerced/``, ``aid150/``)."""
    if not (DATASETS / "ucmerced").is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (2 CPUs, small object store)."""
    import ray

    from jobs._ray import _avoid_taken_agent_port

    _avoid_taken_agent_port()  # another Ray on this machine (a developer's, a benchmark) holds port 52365
    for attempt in range(3):  # a loaded machine can make the raylet miss its start-up deadline
        if ray.is_initialized():
            break
        try:
            ray.init(
                address="local", num_cpus=2, object_store_memory=int(3e8), include_dashboard=False, log_to_driver=False
            )
        except Exception:  # noqa: BLE001 - Ray raises a bare Exception on start-up timeouts
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    # Left running on purpose: shut down once at interpreter exit by Ray's own atexit hook.
