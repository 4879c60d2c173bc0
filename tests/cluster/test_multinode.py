"""A real two-node Ray cluster on this machine; `jobs.curate` submitted through the Ray Jobs API.

The head (1 CPU, dashboard + job server) and a worker node (1 CPU, custom resource
``worker_node``), both on 127.0.0.1, run as `ray start --block` children of this test, each with its own temp dir
and ports, with token authentication (Ray's default) using a token made for this test. Teardown
stops exactly those processes (never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import (
    FAULT_SETTINGS,
    REPO,
    free_port,
    node_ports,
    start_node,
    stop_nodes,
    wait_for,
    write_subset,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every Ray process on 127.0.0.1 (the head's GCS listens
# on loopback only), and also makes `ray start --address` refuse to add a node. Setting it to 1 for
# the worker would rewrite the head address 127.0.0.1 to this machine's network IP, where the GCS
# does not listen. So the worker runs the `ray` CLI with only that refusal lifted, in its own view of
# the constants; everything else (and every process it starts) keeps the loopback behaviour.
JOIN_ON_LOOPBACK = """
import sys, types
import ray.scripts.scripts as cli
view = types.ModuleType("ray_constants_view")
view.__dict__.update(vars(cli.ray_constants))
view.ENABLE_RAY_CLUSTER = True
cli.ray_constants = view
sys.argv[0] = "ray"
sys.exit(cli.main())
"""


def bare_python(folder: Path) -> Path:
    """``folder`` with a ``python`` that lacks the project's packages (the base interpreter without
    site-packages): the ``python`` a fresh machine's ``PATH`` finds, put first on the nodes' ``PATH``."""
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\nexec {sys._base_executable} -S "$@"\n')
    shim.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    """(dashboard URL, auth headers, temp dirs); both nodes stopped by PID afterwards."""
    token = uuid.uuid4().hex + uuid.uuid4().hex
    tag = uuid.uuid4().hex[:6]
    temp_dirs = [f"/tmp/rt-h{tag}", f"/tmp/rt-w{tag}"]
    port, dashboard = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{bare_python(tmp_path_factory.mktemp('bin'))}:{env.get('PATH', '')}"
    ray = str(Path(sys.executable).with_name("ray"))
    logs = tmp_path_factory.mktemp("ray-logs")
    head_cmd = [
        ray,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={free_port()}",
        f"--temp-dir={temp_dirs[0]}",
        *node_ports(),
    ]
    worker_cmd = [
        sys.executable,
        "-c",
        JOIN_ON_LOOPBACK,
        "start",
        "--block",
        f"--address=127.0.0.1:{port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=1",
        '--resources={"worker_node": 1}',
        f"--temp-dir={temp_dirs[1]}",
        *node_ports(),
    ]
    procs: list[subprocess.Popen] = []
    url = f"http://127.0.0.1:{dashboard}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        procs.append(
            start_node(head_cmd, env, logs / "head.log", temp_dirs[0], lambda: _alive_nodes(url, headers) >= 1)
        )
        procs.append(
            start_node(worker_cmd, env, logs / "worker.log", temp_dirs[1], lambda: _alive_nodes(url, headers) >= 2)
        )
        yield url, headers, temp_dirs
    finally:
        stop_nodes(procs, temp_dirs)


def _get(url: str, headers: dict, path: str) -> dict | None:
    try:
        r = httpx.get(url + path, headers=headers, timeout=10)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _alive_nodes(url: str, headers: dict) -> int:
    data = _get(url, headers, "/api/v0/nodes?limit=100")
    rows = (data or {}).get("data", {}).get("result", {}).get("result", [])
    return sum(1 for n in rows if n.get("state") == "ALIVE")


def test_curate_job_on_two_nodes(two_node_cluster, datasets_dir, tmp_path):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, headers, _ = two_node_cluster
    with pytest.raises(AuthenticationError, match="Invalid authentication token"):  # token auth is on
        JobSubmissionClient(url, headers={"Authorization": "Bearer not-the-token"}).list_jobs()

    subset = write_subset(datasets_dir, tmp_path / "uc2", per_class=2)
    run_dir = tmp_path / "run"  # on a real cluster: s3://bucket/runs/...; here every node shares /tmp
    settings = [s for s in FAULT_SETTINGS if not s.startswith("sample.")]
    # one 1-CPU k-means shard actor per node: the level-1 work must use both nodes. One embedding
    # actor (0.5 CPU): with two, each 1-CPU node keeps only 0.5 CPU free and the 1-CPU read tasks
    # never fit (resource fragmentation; Ray Data waits forever).
    entrypoint = " ".join(
        [
            sys.executable,
            "-m",
            "jobs.curate",
            f"input.path={subset}",
            f"run_dir={run_dir}",
            *settings,
            "embed.pool_size=1",
            "kmeans.cpus_per_actor=1",
            "sample.target_size=20",
            "report.enabled=true",
        ]
    )
    client = JobSubmissionClient(url, headers=headers)
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={
            "working_dir": str(REPO),
            "excludes": [".git", ".venv", "benchmarks/.cache", "data", "docs", "runs"],
        },
    )
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = wait_for(lambda: (s := client.get_job_status(job_id)) in terminal and s, 1200, 2.0, "job to finish")
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    assert f"manifest: {run_dir / 'manifest.parquet'}" in logs

    manifest = pq.read_table(run_dir / "manifest.parquet")
    assert sum(manifest.column("multiplicity").to_pylist()) == 20
    inputs = {f"{p.parent.name}/{p.name}" for p in subset.rglob("*.tif")}
    assert {Path(u).parent.name + "/" + Path(u).name for u in manifest.column("uri").to_pylist()} <= inputs
    # the report's count cards are the run's numbers: 42 images read, 20 selected with repeats
    html = (run_dir / "report.html").read_text()
    cards = {k: int(v.replace(",", "")) for k, v in re.findall(r'id="count-(\w+)"><b>([\d,]+)</b>', html)}
    assert cards["read"] == len(inputs) == 42 and cards["rejected"] == 0
    assert cards["selected"] == 20 and cards["unique_selected"] == manifest.num_rows
    assert 'id="clusters"' in html and 'id="gallery"' in html

    actors = _get(
        url,
        headers,
        "/api/v0/actors?limit=1000&detail=true&filter_keys=class_name&filter_predicates=%3D&filter_values=Shard",
    )
    shards = actors["data"]["result"]["result"]
    assert len({a["node_id"] for a in shards}) == 2, shards


def test_submit_example_names_the_interpreter(two_node_cluster):
    """docs/cluster.md's submit command as written (`ray job submit --working-dir . -- <venv>/bin/python
    -m jobs...`) runs on a head whose `PATH` finds a `python` without the project's packages; the
    bare `python` entrypoint fails there the way a fresh machine fails."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    url, headers, _ = two_node_cluster
    token = headers["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    ray = str(Path(sys.executable).with_name("ray"))
    venv_python = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").is_dir() else sys.executable
    submit = [ray, "job", "submit", f"--address={url}", "--working-dir", "."]
    named = subprocess.run(
        [*submit, "--", venv_python, "-m", "jobs.sample", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert named.returncode == 0 and "strata sample [key=value ...]" in named.stdout, named.stdout[-3000:]

    client = JobSubmissionClient(url, headers=headers)
    bare = client.submit_job(entrypoint="python -m jobs.sample --help", runtime_env={"working_dir": str(REPO)})
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = wait_for(lambda: (s := client.get_job_status(bare)) in terminal and s, 300, 1.0, "bare-python job")
    assert status == JobStatus.FAILED and "ModuleNotFoundError" in client.get_job_logs(bare)
