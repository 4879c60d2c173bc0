import subprocess
import sys
from pathlib import Path

from jobs.cli import available_jobs, main


def test_jobs_are_discovered():
    jobs = available_jobs()
    assert {"curate", "embed", "cluster", "sample"} <= set(jobs)
    assert "cli" not in jobs and not any(j.startswith("_") for j in jobs)


def test_unknown_job_and_help(capsys):
    assert main(["no-such-job"]) == 2
    assert "unknown job" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "curate" in capsys.readouterr().out


def test_console_script_shows_job_config():
    strata = Path(sys.executable).with_name("strata")
    out = subprocess.run([str(strata), "curate", "--cfg", "job"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "target_size" in out.stdout and "n_clusters" in out.stdout


def test_active_jobs_default_to_stage_features_and_curation_to_the_last_layer():
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for job, features in (("active", "stages"), ("evaluate_active", "stages"), ("curate", "head")):
            embed = compose(job).embed
            assert embed.features == features and embed.tta == "none", (job, embed)


SPY_ON_RAY_IMPORT = """
import os, sys
from omegaconf import OmegaConf
from jobs._ray import init_ray

class Spy:  # stops at `import ray` and shows the setting Ray reads when imported
    def find_spec(self, name, path=None, target=None):
        if name == "ray":
            print("at import:", os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), flush=True)
            raise SystemExit(0)

sys.meta_path.insert(0, Spy())
init_ray(OmegaConf.create({"ray": {"address": sys.argv[1] or None}}))
"""


def test_a_jobs_own_ray_binds_loopback_and_a_cluster_driver_keeps_its_address():
    """Ray decides at import whether a new local node binds 127.0.0.1 or the machine's network
    address: a job starting its own Ray must set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before that
    import; a driver joining a cluster must not (its node would then claim to be 127.0.0.1)."""
    from tests.processes import REPO, job_env

    env = job_env()
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    seen = {}
    for address in ("", "local", "10.0.0.5:6379"):
        out = subprocess.run(
            [sys.executable, "-c", SPY_ON_RAY_IMPORT, address], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        seen[address] = out.stdout.strip()
    assert seen == {"": "at import: 0", "local": "at import: 0", "10.0.0.5:6379": "at import: None"}


def test_help_into_a_closed_pipe_ends_without_a_traceback():
    """`strata curate --help | head -1`: the reader leaves first; the job must not print a traceback."""
    import os

    strata = Path(sys.executable).with_name("strata")
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write fails with EPIPE
    try:
        out = subprocess.run([str(strata), "curate", "--help"], stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "BrokenPipeError" not in out.stderr
