import ast
import json
import shutil
from pathlib import Path

import pytest

from pipeline.artifacts import ALL, CLUSTERS, DUPLICATES, EMBEDDINGS, input_fingerprint
from pipeline.rundir import INPUT, RunDir, StepInputMissing, fingerprint

REPO = Path(__file__).resolve().parents[1]


def _step(run: RunDir, name: str, config, inputs=(), force=False, result=None) -> bool:
    """Run a no-op step; True when it ran (False when skipped)."""
    with run.step(name, config, inputs, force=force) as step:
        if step.skipped:
            return False
        step.result = result or {"n": 1}
    return True


def test_step_skips_on_same_config_and_reruns_on_change_or_force(tmp_path):
    run = RunDir(str(tmp_path / "r"))
    assert _step(run, "embed", {"a": 1}, {INPUT: "x"})
    assert not _step(run, "embed", {"a": 1}, {INPUT: "x"})
    assert _step(run, "embed", {"a": 2}, {INPUT: "x"})  # config changed
    assert _step(run, "embed", {"a": 2}, {INPUT: "y"})  # input changed
    assert _step(run, "embed", {"a": 2}, {INPUT: "y"}, force=True)
    marker = run.marker("embed")
    assert marker["n"] == 1 and marker["inputs"] == {INPUT: "y"} and "step_seconds" in marker
    assert json.loads((tmp_path / "r" / "run.json").read_text())["counts"]["embed"] == {"n": 1}


def test_changed_upstream_recomputes_exactly_the_dependents(tmp_path):
    run = RunDir(str(tmp_path))
    _step(run, "embed", {}, {INPUT: "A"})
    _step(run, "dedup", {"eps": 0.1}, [EMBEDDINGS])
    _step(run, "cluster", {"k": 4}, [EMBEDDINGS, DUPLICATES])
    assert not _step(run, "dedup", {"eps": 0.1}, [EMBEDDINGS])
    assert _step(run, "dedup", {"eps": 0.2}, [EMBEDDINGS])  # dedup config changed ...
    assert _step(run, "cluster", {"k": 4}, [EMBEDDINGS, DUPLICATES])  # ... so cluster recomputes
    assert _step(run, "embed", {}, {INPUT: "B"})  # new input ...
    assert not run.is_current(DUPLICATES) and not run.is_current(CLUSTERS)  # ... both are stale
    assert _step(run, "dedup", {"eps": 0.2}, [EMBEDDINGS]) and run.is_current(DUPLICATES)


def test_missing_input_step_is_a_clear_error(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(StepInputMissing, match="run the 'embed' step first"):
        _step(run, "dedup", {}, [EMBEDDINGS])


def test_failed_step_leaves_no_marker(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(RuntimeError):
        with run.step("embed", {}, {INPUT: "A"}):
            raise RuntimeError("crash")
    assert not run.is_done("embed")


def test_copied_run_resumes_without_recomputing(tmp_path):
    first = RunDir(str(tmp_path / "a"))
    _step(first, "embed", {"checkpoint": first.path("pretrain", "checkpoint")}, {INPUT: "A"})
    _step(first, "cluster", {"k": 4}, [EMBEDDINGS])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = RunDir(str(tmp_path / "b"))
    # paths inside the run directory are fingerprinted relative to it
    assert not _step(copy, "embed", {"checkpoint": copy.path("pretrain", "checkpoint")}, {INPUT: "A"})
    assert not _step(copy, "cluster", {"k": 4}, [EMBEDDINGS])


def test_opening_a_run_dir_creates_nothing(tmp_path):
    run = RunDir(str(tmp_path / "nope"))
    assert not run.is_done("index") and not run.exists(EMBEDDINGS)
    assert not (tmp_path / "nope").exists()


def test_input_fingerprint_follows_files_not_location(tmp_path):
    (tmp_path / "a" / "cls").mkdir(parents=True)
    (tmp_path / "a" / "cls" / "x.jpg").write_bytes(b"12345")
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copytree keeps mtimes
    assert input_fingerprint(str(tmp_path / "a")) == input_fingerprint(str(tmp_path / "b"))
    (tmp_path / "b" / "cls" / "y.jpg").write_bytes(b"1")
    assert input_fingerprint(str(tmp_path / "a")) != input_fingerprint(str(tmp_path / "b"))


def test_staging_renames_only_on_success(tmp_path):
    run = RunDir(str(tmp_path))
    with pytest.raises(RuntimeError):
        with run.staging("out") as tmp:
            (tmp_path / tmp.split("/")[-1]).mkdir()
            raise RuntimeError("crash mid-write")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out")] == []
    with run.staging("out") as tmp:
        (tmp_path / tmp.split("/")[-1]).mkdir()
        (tmp_path / tmp.split("/")[-1] / "x").write_text("done")
    assert (tmp_path / "out" / "x").read_text() == "done"


def test_run_json_merges_sections(tmp_path):
    run = RunDir(str(tmp_path))
    run.update_run_json(timings={"embed": 1.0}, seed=0)
    run.update_run_json(timings={"cluster": 2.0})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data == {"seed": 0, "timings": {"embed": 1.0, "cluster": 2.0}}


def test_fingerprint_is_order_independent_and_relative_to_the_run():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"p": "/x/run/emb"}, "/x/run") == fingerprint({"p": "/y/run2/emb"}, "/y/run2")
    assert fingerprint({"p": "/x/runner"}, "/x/run") != fingerprint({"p": "/y/runner"}, "/y/run")


def test_no_artifact_path_is_spelled_outside_the_run_directory_modules():
    """Every path inside run_dir is named once, in pipeline/artifacts.py (docstrings may mention them):
    no file name of an artifact anywhere, no folder name handed to a RunDir path method."""
    files = {a.name.split("/")[-1] for a in ALL if "." in a.name.split("/")[-1]} | {
        a.name for a in ALL if "/" in a.name
    }
    folders = {a.name for a in ALL if a.name and "." not in a.name}
    path_methods = {"path", "local", "exists", "staging", "write_json", "read_json"}
    offenders = []
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("jobs/*.py")]:
        if path.name in ("artifacts.py", "rundir.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in files:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in path_methods:
                for arg in node.args:
                    if (
                        isinstance(arg, ast.Constant)
                        and isinstance(arg.value, str)
                        and arg.value.split("/")[0] in folders
                    ):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {arg.value!r}")
    assert not offenders, "\n".join(offenders)


def test_run_synced_through_object_storage_resumes_without_recomputing():
    """fsspec run directories (memory:// here, s3:// in production): a synced copy skips its steps."""
    import fsspec

    first = RunDir("memory://bucket/runs/a")
    _step(first, "embed", {"checkpoint": first.path("pretrain", "checkpoint")}, {INPUT: "A"})
    _step(first, "cluster", {"k": 4}, [EMBEDDINGS])
    fs = fsspec.filesystem("memory")
    fs.copy("/bucket/runs/a", "/bucket/synced/b", recursive=True)
    copy = RunDir("memory://bucket/synced/b")
    assert not _step(copy, "embed", {"checkpoint": copy.path("pretrain", "checkpoint")}, {INPUT: "A"})
    assert not _step(copy, "cluster", {"k": 4}, [EMBEDDINGS])
    assert _step(copy, "cluster", {"k": 5}, [EMBEDDINGS])


def test_embeddings_from_elsewhere_are_an_input_until_a_recompute_crashes(tmp_path):
    run = RunDir(str(tmp_path))
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "embeddings" / "part-00000.parquet").write_bytes(b"x")
    assert run.has(EMBEDDINGS) and run.input_fingerprints([EMBEDDINGS])["embed"].startswith("external-")
    with pytest.raises(RuntimeError):
        with run.step("embed", {}, {INPUT: "A"}):
            raise RuntimeError("crash while rewriting embeddings/")
    assert not run.has(EMBEDDINGS)  # half-rewritten outputs are never served
    with run.step("embed", {}, {INPUT: "A"}) as step:
        step.result = {"kept": 1}
    assert run.is_done("embed") and not (tmp_path / "_markers" / "embed.running").exists()


def _run_job_in_process(monkeypatch, run_dir: Path, body) -> int:
    """A strata job (the ``sample`` config, no Ray) whose work is ``body(run)``; its exit code."""
    import sys

    from jobs._common import strata_job
    from jobs._record import open_run_dir

    @strata_job("sample")
    def main(cfg):
        body(open_run_dir(cfg))

    monkeypatch.setattr(sys, "argv", ["strata-sample", f"run_dir={run_dir}"])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_run_json_records_start_end_status_code_version_and_host(tmp_path, monkeypatch):
    import socket
    from datetime import datetime

    seen: dict = {}
    assert _run_job_in_process(monkeypatch, tmp_path / "ok", lambda run: seen.update(run.read_json("run.json"))) == 0
    assert seen["status"] == "running" and seen["finished_at"] is None  # while the job runs
    record = json.loads((tmp_path / "ok" / "run.json").read_text())
    assert record["job"] == "sample" and record["status"] == "succeeded" and record["error"] is None
    start, end = (datetime.strptime(record[k], "%Y-%m-%dT%H:%M:%SZ") for k in ("started_at", "finished_at"))
    assert start <= end and record["seconds"] >= 0
    assert record["host"] == socket.gethostname()
    head = (REPO / ".git" / "HEAD").read_text().strip()
    ref = REPO / ".git" / head.removeprefix("ref: ") if head.startswith("ref: ") else None
    commit = ref.read_text().strip() if ref and ref.exists() else record["code"]["git_commit"]
    assert record["code"]["git_commit"] == commit and len(commit) == 40
    assert record["code"]["version"] and isinstance(record["code"]["git_dirty"], bool)


def test_run_json_of_a_failed_job_has_the_error_line(tmp_path, monkeypatch, capsys):
    def fail(run):
        raise RuntimeError("shard 3 lost\nsecond line of detail")

    assert _run_job_in_process(monkeypatch, tmp_path / "bad", fail) == 1
    record = json.loads((tmp_path / "bad" / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: shard 3 lost"
    assert record["finished_at"] >= record["started_at"]
    assert "strata sample: error: RuntimeError: shard 3 lost" in capsys.readouterr().err
