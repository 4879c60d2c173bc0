"""The run directory: every output of a run, ``run.json``, and one done-marker per finished step.

Layout (local path or any fsspec URI)::

    <run_dir>/
      run.json                 resolved config, seed, versions, counts, timings per stage
      _markers/<step>.json     written last by a finished step; its presence means "done"
      embeddings/ rejects.parquet clusters/ manifest.parquet ...   stage outputs

A step whose marker exists, and whose recorded config fingerprint matches, is skipped on rerun.
Outputs are written under temporary names and renamed after success, so a crash never leaves
something that looks finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from typing import Any, Iterator

import fsspec

log = logging.getLogger(__name__)


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-serialisable config fragment."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """Paths, done-markers and ``run.json`` of one run directory."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._root = fsspec.core.url_to_fs(self.root)
        self.fs.makedirs(self._root, exist_ok=True)

    def path(self, *parts: str) -> str:
        """URI of ``parts`` inside the run directory (same scheme as ``root``)."""
        return "/".join([self.root, *parts])

    def local(self, *parts: str) -> str:
        """Filesystem path (no scheme) of ``parts``, for use with ``self.fs``."""
        return "/".join([self._root, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.local(*parts))

    # ---- markers -------------------------------------------------------------------------
    def _marker(self, step: str) -> str:
        return self.local("_markers", f"{step}.json")

    def is_done(self, step: str, config: Any = None) -> bool:
        """True when ``step`` finished before with the same config fingerprint (if given)."""
        marker = self._marker(step)
        if not self.fs.exists(marker):
            return False
        if config is None:
            return True
        info = self.marker(step)
        if info.get("fingerprint") != fingerprint(config):
            log.warning("step %s finished before with another config; recomputing", step)
            return False
        return True

    def marker(self, step: str) -> dict:
        with self.fs.open(self._marker(step), "r") as fh:
            return json.load(fh)

    def mark_done(self, step: str, config: Any = None, **info: Any) -> None:
        """Record that ``step`` finished (call after its outputs are in place)."""
        payload = {"step": step, "finished_at": time.time(), **info}
        if config is not None:
            payload["fingerprint"] = fingerprint(config)
        self.write_json(self._marker(step), payload, local=True)

    def clear(self, *steps: str) -> None:
        """Forget that ``steps`` finished (``force=true``)."""
        for step in steps:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._marker(step))

    # ---- atomic outputs --------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, *parts: str) -> Iterator[str]:
        """Yield a temporary path; on success it is renamed to ``parts`` (replacing any old one)."""
        final = self.local(*parts)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            yield self._with_scheme(tmp)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(tmp, recursive=True)
            raise
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)
        self.fs.mv(tmp, final, recursive=True)

    def _with_scheme(self, local_path: str) -> str:
        return self.root[: len(self.root) - len(self._root)] + local_path if "://" in self.root else local_path

    # ---- run.json ---------------------------------------------------------------------------
    def write_json(self, path: str, payload: Any, local: bool = False) -> None:
        target = path if local else self.local(path)
        parent = os.path.dirname(target)
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        self.fs.mv(tmp, target)

    def read_json(self, path: str, default: Any = None) -> Any:
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
