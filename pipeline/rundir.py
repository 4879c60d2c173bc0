"""The run directory and the one step contract every job uses.

Layout (local path or any fsspec URI; every artifact's path is named in :mod:`pipeline.artifacts`)::

    <run_dir>/
      run.json                 resolved config, seed, versions, counts, timings per step
      _markers/<step>.json     written last by a finished step; its presence means "done"
      embeddings/ rejects.parquet clusters/ manifest.parquet ...   step outputs

A step runs inside :meth:`RunDir.step`::

    with run.step("dedup", config, inputs=[EMBEDDINGS], force=force) as step:
        if step.skipped:
            return step.result
        ...                      # write outputs (``run.staging`` renames them into place)
        step.result = counts     # recorded in the marker and in run.json

Its **fingerprint** is the hash of its config plus the fingerprints of what it reads: for an
artifact, the fingerprint of the step that wrote it (from that step's marker); for the input
collection, a listing of relative names, sizes and modification times (or ETags). Paths inside
the run directory are written relative to it. So a changed input or upstream config recomputes
exactly the dependent steps, and a run directory copied elsewhere resumes without recomputing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from pipeline.atomic import atomic_path

log = logging.getLogger(__name__)

RUN_ROOT = "<run_dir>"
INPUT = "input"  # input-fingerprint key of the input collection's listing (not a step)
_BOOKKEEPING = ("step", "fingerprint", "inputs", "finished_at", "step_seconds")


@dataclass(frozen=True)
class Artifact:
    """A path inside the run directory, the step that writes it and the job that runs that step."""

    name: str
    step: str
    job: str
    doc: str = ""

    def __str__(self) -> str:
        return self.name

    def __truediv__(self, child: str) -> str:
        return f"{self.name}/{child}"


def fingerprint(obj: Any, root: str | None = None) -> str:
    """Stable short hash of a JSON-serialisable value; strings under ``root`` are made relative to it."""
    if root:
        obj = _relative(obj, root.rstrip("/"))
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _relative(obj: Any, root: str) -> Any:
    if isinstance(obj, str):
        if obj == root or obj.startswith(root + "/"):
            return RUN_ROOT + obj[len(root) :]
        return obj
    if isinstance(obj, Mapping):
        return {k: _relative(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_relative(v, root) for v in obj]
    return obj


# ---- input collection --------------------------------------------------------------------------
def input_fingerprint(path: str) -> str:
    """Fingerprint of an input collection: relative names, sizes and mtimes (or ETags) of its files.

    Independent of where the collection lives, so a copied input with the same files matches.
    """
    fs, p = fsspec.core.url_to_fs(path)
    if any(ch in p for ch in "*?["):
        infos = {f: fs.info(f) for f in fs.glob(p)}
        root = os.path.dirname(p.split("*")[0].split("?")[0].split("[")[0])
    elif fs.isdir(p):
        infos = fs.find(p, detail=True)
        root = p
    else:
        infos = {p: fs.info(p)}
        root = os.path.dirname(p)
    listing = sorted(
        (
            os.path.relpath(f, root),
            info.get("size"),
            info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified"),
        )
        for f, info in infos.items()
    )
    return fingerprint(listing)


# step name -> artifact path that may also come from outside the run (then fingerprinted by listing)
EXTERNAL_SOURCES: dict[str, str] = {}


class StepInputMissing(FileNotFoundError):
    """A step reads an artifact whose producing step has not finished in this run directory."""


class RunDir:
    """Paths, steps, done-markers and ``run.json`` of one run directory.

    Nothing is created until something is written: opening a run directory to read it (search,
    report) never leaves an empty folder behind.
    """

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")
        self.fs, self._root = fsspec.core.url_to_fs(self.root)

    def path(self, *parts: str | Artifact) -> str:
        """URI of ``parts`` (artifacts or names) inside the run directory (same scheme as ``root``)."""
        return "/".join([self.root, *map(str, parts)])

    def local(self, *parts: str | Artifact) -> str:
        """Filesystem path (no scheme) of ``parts``, for use with ``self.fs``."""
        return "/".join([self._root, *map(str, parts)])

    def exists(self, *parts: str | Artifact) -> bool:
        return self.fs.exists(self.local(*parts))

    # ---- steps -------------------------------------------------------------------------------
    def step(
        self,
        name: str,
        config: Any,
        inputs: Iterable[Artifact] | Mapping[str, str] = (),
        *,
        force: bool = False,
    ) -> Step:
        """The contract of one step (see the module docstring); use as a context manager."""
        return Step(self, name, config, inputs, force=force)

    def step_fingerprint(self, step: str) -> str | None:
        """Fingerprint recorded by ``step``'s marker; for an output placed in the run directory from
        outside (embeddings made elsewhere), the fingerprint of its file listing; else None."""
        if self.is_done(step):
            return self.marker(step).get("fingerprint")
        source = EXTERNAL_SOURCES.get(step)
        if source and self.exists(source) and not self.fs.exists(self._running(step)):  # never a half-recomputed output
            return "external-" + input_fingerprint(self.path(source))
        return None

    def has(self, artifact: Artifact) -> bool:
        """True when ``artifact`` can be read: its step finished here, or it was placed here from outside."""
        return self.step_fingerprint(artifact.step) is not None

    def input_fingerprints(self, inputs: Iterable[Artifact] | Mapping[str, str]) -> dict[str, str]:
        """``{name: fingerprint}`` of ``inputs``: artifacts by their producing step, mappings as given."""
        if isinstance(inputs, Mapping):
            return dict(inputs)
        out = {}
        for artifact in inputs:
            fp = self.step_fingerprint(artifact.step)
            if fp is None:
                raise StepInputMissing(
                    f"{self.path(artifact)} is missing: run the {artifact.step!r} step first "
                    f"(`strata {artifact.job} run_dir={self.root}`)"
                )
            out[artifact.step] = fp
        return out

    def is_current(self, artifact: Artifact) -> bool:
        """True when ``artifact``'s step finished and everything it read is unchanged since."""
        if self.step_fingerprint(artifact.step) is None:
            return False
        if not self.is_done(artifact.step):
            return True  # placed here from outside: nothing recorded to compare
        recorded = self.marker(artifact.step).get("inputs") or {}
        return all(self.step_fingerprint(step) == fp for step, fp in recorded.items() if step != INPUT)

    # ---- markers -------------------------------------------------------------------------------
    def _marker(self, step: str) -> str:
        return self.local("_markers", f"{step}.json")

    def _running(self, step: str) -> str:
        """Written when a step starts (re)computing, removed when it finishes: a crash leaves it."""
        return self.local("_markers", f"{step}.running")

    def is_done(self, step: str, config: Any = None) -> bool:
        """True when ``step``'s marker exists (and, when ``config`` is given, has its fingerprint).

        Used directly only for sub-steps (one k-means resampling step, one download date) whose
        fingerprint the enclosing :class:`Step` derives from its own.
        """
        marker = self._marker(step)
        if not self.fs.exists(marker):
            return False
        recorded = self.marker(step).get("fingerprint")
        return recorded is not None and (config is None or recorded == fingerprint(config, self.root))

    def marker(self, step: str) -> dict:
        with self.fs.open(self._marker(step), "r") as fh:
            return json.load(fh)

    def mark_done(self, step: str, config: Any = None, **info: Any) -> None:
        """Record that sub-step ``step`` finished (call after its outputs are in place)."""
        payload = {"step": step, "finished_at": time.time(), **info}
        if config is not None:
            payload["fingerprint"] = fingerprint(config, self.root)
        self.write_json(self._marker(step), payload, local=True)

    def clear(self, *steps: str) -> None:
        """Forget that ``steps`` finished."""
        for step in steps:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._marker(step))

    # ---- atomic outputs ------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, *parts: str | Artifact) -> Iterator[str]:
        """Yield a temporary path; on success it is renamed to ``parts`` (replacing any old one)."""
        with atomic_path(self.local(*parts), self.fs) as tmp:
            yield self._with_scheme(tmp)

    def _with_scheme(self, local_path: str) -> str:
        return self.root[: len(self.root) - len(self._root)] + local_path if "://" in self.root else local_path

    # ---- run.json ------------------------------------------------------------------------------
    def write_json(self, path: str | Artifact, payload: Any, local: bool = False) -> None:
        with atomic_path(str(path) if local else self.local(path), self.fs) as tmp, self.fs.open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)

    def read_json(self, path: str | Artifact, default: Any = None) -> Any:
        target = self.local(path)
        if not self.fs.exists(target):
            return default
        with self.fs.open(target, "r") as fh:
            return json.load(fh)

    def update_run_json(self, **sections: Any) -> dict:
        """Merge ``sections`` into ``run.json`` (dict values are merged one level deep)."""
        run = self.read_json("run.json", default={})
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(run.get(key), dict):
                run[key] = {**run[key], **value}
            else:
                run[key] = value
        self.write_json("run.json", run)
        return run


class Step:
    """One step of a run: skip when finished with the same fingerprint, else run, time and mark.

    Attributes after ``__enter__``: ``fingerprint``, ``inputs`` (``{step: fingerprint}``),
    ``skipped`` and ``result`` (the recorded result of a skipped step). Set ``result`` to a
    JSON-serialisable dict before the block ends; it goes to the marker and ``run.json``.
    An exception leaves no marker, so the next run recomputes the step.
    """

    def __init__(
        self, run: RunDir, name: str, config: Any, inputs: Iterable[Artifact] | Mapping[str, str], *, force: bool
    ):
        self.run, self.name, self.config, self.force = run, name, config, force
        self._inputs = inputs if isinstance(inputs, Mapping) else tuple(inputs)
        self.skipped = False
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Step:
        run = self.run
        self._t0 = time.perf_counter()
        self.inputs = run.input_fingerprints(self._inputs)
        self.fingerprint = fingerprint({"config": self.config, "inputs": self.inputs}, run.root)
        if run.is_done(self.name):
            previous = run.marker(self.name)
            if not self.force and previous.get("fingerprint") == self.fingerprint:
                self.skipped = True
                self.result = {k: v for k, v in previous.items() if k not in _BOOKKEEPING}
                log.info(
                    "%s: finished before with the same config and inputs; skipping (force=true recomputes)", self.name
                )
                return self
            changed = "force=true" if self.force else _what_changed(previous.get("inputs") or {}, self.inputs)
            log.info("%s: recomputing (%s)", self.name, changed)
        # Until it finishes, the step is not done and its outputs are not adoptable as external inputs.
        run.clear(self.name)
        run.write_json(run._running(self.name), {"step": self.name, "running_since": time.time()}, local=True)
        log.info("== %s", self.name)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None or self.skipped:
            return False
        seconds = round(time.perf_counter() - self._t0, 3)
        result = {k: v for k, v in self.result.items() if k not in _BOOKKEEPING}
        payload = {
            "step": self.name,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "finished_at": time.time(),
            "step_seconds": seconds,
            **result,
        }
        self.run.update_run_json(timings={self.name: seconds}, counts={self.name: result})
        self.run.write_json(self.run._marker(self.name), payload, local=True)
        self.run.fs.rm(self.run._running(self.name))
        return False

    def sub_fingerprint(self, **config: Any) -> dict:
        """Config of a sub-step marker (``RunDir.is_done`` / ``mark_done``): its own settings and this
        step's inputs, so a sub-step survives a change of the step's config that it does not read."""
        return {"inputs": self.inputs, **config}


def _what_changed(before: Mapping[str, str], now: Mapping[str, str]) -> str:
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    return f"changed inputs: {', '.join(changed)}" if changed else "config changed"
