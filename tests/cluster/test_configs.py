"""`cluster.yaml` and `cluster.local.yaml` are valid `ray up` configurations (Ray's own schema)."""

from __future__ import annotations

import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.cluster.conftest import REPO


def _prepared(name: str) -> tuple[dict, dict]:
    raw = yaml.safe_load((REPO / name).read_text())
    return raw, prepare_config(copy.deepcopy(raw))


def test_aws_config_has_cpu_head_gpu_workers_and_bounds():
    raw, cfg = _prepared("cluster.yaml")
    validate_config(cfg)
    nodes = cfg["available_node_types"]
    head = nodes[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    gpu = [n for n, t in nodes.items() if t["node_config"]["InstanceType"].startswith(("g4dn", "g5", "p"))]
    assert len(gpu) >= 1
    assert all(nodes[n]["min_workers"] <= nodes[n]["max_workers"] for n in nodes)
    assert sum(nodes[n]["max_workers"] for n in nodes) >= cfg["max_workers"] > 0
    setup = " ".join(cfg["setup_commands"])
    assert "[gpu]" in setup and "pip install" in setup
    assert "./conf" in cfg["file_mounts"].values()
    assert raw["provider"]["type"] == "aws"


@pytest.mark.parametrize("name", ["cluster.local.yaml"])
def test_local_provider_variant(name):
    raw, cfg = _prepared(name)
    validate_config(cfg)
    assert raw["provider"]["type"] == "local"
    # the local provider has one node type for head and workers: exactly the listed machines
    (node,) = cfg["available_node_types"].values()
    assert node["min_workers"] == node["max_workers"] == len(raw["provider"]["worker_ips"])
    assert "[gpu]" in " ".join(cfg["setup_commands"])
