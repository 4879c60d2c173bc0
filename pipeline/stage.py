"""Stage: a small batch transform that declares its columns and resources.

A stage's ``__call__`` takes and returns a ``pyarrow.Table``, so the same object runs in a unit
test, in a plain loop, or on a Ray Data actor pool (see :func:`pipeline.executor.map_stage`).
Heavy state (models, indexes) is built in ``setup()``, once per worker, never in ``__init__``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks the scheduler for."""

    cpus: float = 0.5
    gpus: float = 0.0


class Stage:
    """Base class: subclasses set ``name``, ``inputs``, ``outputs`` and implement ``process``."""

    name: ClassVar[str] = "stage"
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    resources: Resources = Resources()
    batch_size: int = 64

    _ready: bool = False

    def setup(self) -> None:
        """Build heavy state once per worker (models, indexes)."""

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> pa.Table:
        if not self._ready:
            self.setup()
            self._ready = True
        missing = [c for c in self.inputs if c not in batch.column_names]
        if missing:
            raise KeyError(f"stage {self.name!r} needs columns {missing}; got {batch.column_names}")
        out = self.process(batch)
        absent = [c for c in self.outputs if c not in out.column_names]
        if absent:
            raise KeyError(f"stage {self.name!r} did not produce columns {absent}")
        return out


def preprocess_specs(stages: list[dict] | None) -> list[tuple[type, dict]]:
    """``[(StageClass, kwargs)]`` of the enabled ``preprocess.stages`` entries (``cls``, ``kwargs``, ``enabled``).

    ``cls`` is the import path of a :class:`Stage` (any package's, so users can add
    their own image-bytes stages without touching Strata).
    """
    specs = []
    for entry in stages or []:
        if not entry.get("enabled", True):
            continue
        if "cls" not in entry:
            raise KeyError(f"preprocess stage entry needs 'cls': {entry}")
        module, _, name = str(entry["cls"]).rpartition(".")
        specs.append((getattr(importlib.import_module(module), name), dict(entry.get("kwargs") or {})))
    return specs
