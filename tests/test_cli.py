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
