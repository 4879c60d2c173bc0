"""One source of configuration: defaults from conf/, typed schemas, errors before any work."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from jobs._config import job_help, validate
from pipeline.config import CONF_DIR, ConfigError, load_group, schema, with_defaults

REPO = Path(__file__).resolve().parents[1]


def test_group_defaults_resolve_references_to_the_jobs_top_level_keys():
    sampling = load_group("sampling/default")
    assert {k: sampling[k] for k in ("target_size", "strategy", "multiplier", "seed")} == {
        "target_size": 500,
        "strategy": "auto",
        "multiplier": 1,
        "seed": 0,
    }
    assert load_group("active/default", "active")["budget"] == 0.05  # ${budget} from conf/active.yaml


def test_with_defaults_merges_nested_and_names_unknown_keys():
    c = with_defaults("coreset/default", {"stratified": {"sample_size": 7}})
    assert c["stratified"]["sample_size"] == 7 and c["stratified"]["resample_every"] == 256
    with pytest.raises(ConfigError, match=r"unknown setting dedup\.epsilon: did you mean dedup\.eps\?"):
        with_defaults("dedup/default", {"epsilon": 0.1})


def test_schema_takes_defaults_from_yaml_and_refuses_a_second_copy(tmp_path):
    from pipeline.embed.config import EmbedConfig

    on_disk = yaml.safe_load((CONF_DIR / "embed" / "efficientnet_lite0.yaml").read_text())
    cfg = EmbedConfig()
    assert {k: getattr(cfg, k) for k in on_disk} == on_disk
    with pytest.raises(TypeError, match="already states"):

        @schema("sampling/default")
        class Twice:
            target_size: int = 3
            strategy: str
            pick_level: int
            allocation_power: float
            budget_split: float
            budget_kmeans: dict
            multiplier: int
            seed: int
            typical: dict
            auto: dict

    with pytest.raises(TypeError, match="does not declare"):

        @schema("sampling/default")
        class Missing:
            target_size: int


def test_no_default_is_stated_in_code_for_a_key_the_yaml_sets():
    """The config classes and dict-shaped groups get every YAML-set default from conf/ (import-time check)."""
    from pipeline.active.config import ActiveConfig
    from pipeline.kmeans.config import KMeansConfig
    from pipeline.search.config import IndexConfig

    assert KMeansConfig.from_dict({"n_clusters": [8]}).metric == load_group("kmeans/default")["metric"]
    assert IndexConfig().nprobe == load_group("search/default")["nprobe"]
    assert ActiveConfig().head == load_group("active/default", "active")["head"]
    for path in [*REPO.glob("pipeline/**/*.py")]:
        text = path.read_text()
        assert not re.search(r"^[A-Z_]*DEFAULTS: dict", text, re.M), (
            f"{path}: a second copy of a config group's defaults"
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sample.target_size=abc"], "sample.target_size=abc: expected an integer"),
        (["sample.targt_size=5"], "did you mean sample.target_size?"),
        (["embed=resnet"], "did you mean embed=resnet50?"),
        (["kmeans.metric=manhattan"], "kmeans.metric must be one of"),
        (["dedup.keep=oldest"], "dedup.keep must be one of"),
        (["input.path=/no/such/folder"], "input.path=/no/such/folder: no such file or folder"),
    ],
)
def test_validation_names_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate("curate", overrides)
    assert message in str(err.value)


def test_embeddings_input_columns_are_checked_before_any_work(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"doc_id": np.arange(4), "vector": pa.array(np.ones((4, 3), np.float32).tolist())})
    pq.write_table(table, tmp_path / "emb.parquet")
    base = ["input.format=embeddings", f"input.path={tmp_path / 'emb.parquet'}", f"run_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="did you mean"):
        validate("curate", [*base, "input.id_column=doc_id", "input.embedding_column=vectr"])
    assert not (tmp_path / "run").exists()
    validate("curate", [*base, "input.id_column=doc_id", "input.embedding_column=vector"])


@pytest.mark.parametrize(
    ("job", "overrides"),
    [
        ("serve", ["max_upload_mb=0.5", "limits.max_body_mb=1.5", "limits.request_timeout_s=2.5"]),
        ("pretrain", ["train.cpus_per_worker=0.5"]),
        ("curate", ["embed=gpu", "embed.cpus_per_actor=1.5"]),
    ],
)
def test_sizes_seconds_and_cpu_shares_may_be_fractions(job, overrides):
    cfg = validate(job, overrides)
    for key, value in (o.split("=") for o in overrides if "." in o.split("=")[0]):
        assert OmegaConf.select(cfg, key) == float(value)


def test_validation_requires_finished_steps_in_the_run_dir(tmp_path):
    from pipeline.artifacts import INDEX

    with pytest.raises(ConfigError, match="holds no finished 'index' step"):
        validate("search", [f"run_dir={tmp_path / 'nope'}"], requires=[INDEX])
    assert not (tmp_path / "nope").exists()


def test_the_same_setting_has_the_same_name_in_every_job():
    assert validate("sample", ["sample.target_size=7"]).sample.target_size == 7
    assert validate("curate", ["sample.target_size=7"]).sample.target_size == 7


def test_help_says_what_the_job_does_within_one_screen():
    import jobs.curate

    text = job_help("curate", jobs.curate.__doc__, "curate", ["sample.target_size", "dedup.eps"])
    assert text.startswith("strata curate") and "balanced subset" in text
    assert "sample.target_size=500  # selected items, counting repeats" in text
    assert len(text.splitlines()) <= 40


@pytest.mark.parametrize("args", [["sample.target_size=abc"], ["input.path=/no/such/folder"], ["sample.targt_size=5"]])
def test_bad_config_fails_fast_in_a_few_lines_and_creates_nothing(tmp_path, args):
    strata = Path(sys.executable).with_name("strata")
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [str(strata), "curate", f"run_dir={run_dir}", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert (
        1 <= len(lines) <= 6 and lines[0].startswith("strata curate: error: ") and args[0].split("=")[0] in lines[0]
    ), lines
    assert "Traceback" not in out.stderr
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []


def test_run_json_never_holds_a_secret(tmp_path):
    from omegaconf import OmegaConf

    from jobs._record import open_run_dir

    run = open_run_dir(
        OmegaConf.create({"run_dir": str(tmp_path / "r"), "seed": 0, "labeler": {"token": "s3cret", "port": 1}})
    )
    text = (tmp_path / "r" / "run.json").read_text()
    assert (
        "s3cret" not in text
        and '"port": 1' in text
        and run.read_json("run.json")["config"]["labeler"]["token"] != "s3cret"
    )
