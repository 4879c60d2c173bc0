"""pipeline.steps: the step runner over the run contract (order, resume, missing inputs, counts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipeline.progress import read_log
from pipeline.rundir import Artifact, RunDir, StepInputMissing
from pipeline.steps import run_steps

NUMBERS = Artifact("numbers.json", "numbers", "numbers")
TOTAL = Artifact("total.json", "total", "total")


@dataclass
class Numbers:
    config: dict
    calls: list = field(default_factory=list)
    name: str = "numbers"
    inputs: tuple = ()
    outputs: tuple = (NUMBERS,)

    def run(self, run: RunDir, force: bool) -> dict:
        with run.step(self.name, self.config, {"input": "fixed"}, force=force) as step:
            if step.skipped:
                return step.result
            self.calls.append(self.name)
            run.write_json(NUMBERS, list(range(self.config["n"])))
            step.result = {"n": self.config["n"]}
        return step.result


@dataclass
class Total:
    config: dict
    calls: list = field(default_factory=list)
    name: str = "total"
    inputs: tuple = (NUMBERS,)
    outputs: tuple = (TOTAL,)

    def run(self, run: RunDir, force: bool) -> dict:
        with run.step(self.name, self.config, self.inputs, force=force) as step:
            if step.skipped:
                return step.result
            self.calls.append(self.name)
            step.result = {"total": sum(run.read_json(NUMBERS))}
        return step.result


def test_steps_run_in_order_resume_and_recompute_their_dependents(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    calls: list = []
    assert run_steps(run, [Numbers({"n": 4}, calls), Total({}, calls)]) == {"numbers": {"n": 4}, "total": {"total": 6}}
    assert calls == ["numbers", "total"]
    assert run_steps(run, [Numbers({"n": 4}, calls), Total({}, calls)])["total"] == {"total": 6}
    assert calls == ["numbers", "total"]  # both skipped: same config, same inputs
    assert run_steps(run, [Numbers({"n": 5}, calls), Total({}, calls)])["total"] == {"total": 10}
    assert calls == ["numbers", "total"] * 2  # a changed upstream recomputes its dependent
    run_steps(run, [Numbers({"n": 5}, calls), Total({}, calls)], force=True)
    assert calls == ["numbers", "total"] * 3
    assert run.read_json("run.json")["counts"]["total"] == {"total": 10}
    assert any(" steps 2/2 step " in line for line in read_log(run))  # the runner's progress


def test_a_step_whose_input_no_earlier_step_writes_fails_before_anything_runs(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    calls: list = []
    with pytest.raises(StepInputMissing, match="step 'total' reads numbers.json, which no earlier step writes"):
        run_steps(run, [Total({}, calls), Numbers({"n": 3}, calls)])
    assert calls == [] and not run.exists("run.json")
    run_steps(run, [Numbers({"n": 3}, calls)])
    assert run_steps(run, [Total({}, calls)]) == {"total": {"total": 3}}  # written by an earlier run
