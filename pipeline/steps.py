"""The step runner: a job is a list of :class:`Step`\\ s run in order over one run directory.

A step names what it reads and writes (:class:`pipeline.rundir.Artifact`\\ s) and runs under the
run contract, :meth:`pipeline.rundir.RunDir.step` (fingerprint of its config and inputs, skip
when unchanged, staged outputs, marker, ``run.json`` counts and timings): its ``run`` opens that
context itself, so the same step is also what a single-step job (``strata embed``, ``strata
dedup``...) calls. Where it runs is its engine's call (:func:`pipeline.engine.select_engine`,
from the step's own setting and its input size).

:func:`run_steps` runs the list: the inputs of every step must be written by an earlier step of
the list or already be in the run directory, each step's progress (``steps``, in the run's
``progress.log``) and wall time are logged, and its counts are returned by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.progress import Progress
from pipeline.rundir import Artifact, RunDir, StepInputMissing

log = logging.getLogger(__name__)


class Step(Protocol):
    """One step of a job: ``name`` (its marker), ``config`` (the settings it is given),
    ``inputs`` / ``outputs`` (artifacts it reads / writes) and ``run`` -> its counts."""

    name: str
    config: dict
    inputs: tuple[Artifact, ...]
    outputs: tuple[Artifact, ...]

    def run(self, run: RunDir, force: bool) -> dict[str, Any]: ...


def check_order(run: RunDir, steps: Sequence[Step]) -> None:
    """Raise :class:`StepInputMissing` (one line) when a step reads an artifact that no earlier step
    of ``steps`` writes and that ``run`` does not hold: found before anything runs."""
    written: set[str] = set()
    for step in steps:
        for artifact in step.inputs:
            if artifact.step not in written and not run.has(artifact):
                raise StepInputMissing(
                    f"step {step.name!r} reads {artifact.name}, which no earlier step writes "
                    f"(`strata {artifact.job} run_dir={run.root}` first)"
                )
        written.update(a.step for a in step.outputs)


def run_steps(run: RunDir, steps: Sequence[Step], *, force: bool = False) -> dict[str, Any]:
    """Run ``steps`` in order in ``run`` (``force``: recompute finished ones); returns ``{name: counts}``."""
    check_order(run, steps)
    counts: dict[str, Any] = {}
    with Progress("steps", total=len(steps), run=run, unit="step", log_interval=0.0) as bar:
        for step in steps:
            t0 = time.perf_counter()
            counts[step.name] = step.run(run, force)
            seconds = time.perf_counter() - t0
            log.info("step %s: %.1f s", step.name, seconds)
            bar.update(1, step=step.name, seconds=round(seconds, 1))
    return counts
