"""Round-by-round checkpoints of the loop in ``<run_dir>/active/state/``.

``state.npz`` (labeled rows, labels, rounds, head weights, last predictions, audit draws, history as
JSON) is replaced atomically after every labeled batch; ``pending-<round>.npy`` holds a batch picked
but not yet fully labeled (with ``audit-<round>.npz``, its audit draws), so a resumed run asks for
exactly the same images.
"""

from __future__ import annotations

import io
import json

import numpy as np

from pipeline.active.loop import LoopState
from pipeline.artifacts import ACTIVE_STATE
from pipeline.atomic import atomic_path
from pipeline.rundir import RunDir


class RunDirCheckpoint:
    """:class:`pipeline.active.loop.Checkpoint` stored in a run directory, tied to one config."""

    def __init__(self, run: RunDir, step_fingerprint: str, folder: str = str(ACTIVE_STATE)):
        self.run, self.folder = run, folder
        self.fingerprint = step_fingerprint

    def _write(self, name: str, data: bytes) -> None:
        with atomic_path(self.run.local(self.folder, name), self.run.fs) as tmp, self.run.fs.open(tmp, "wb") as fh:
            fh.write(data)

    def _read(self, name: str) -> bytes | None:
        path = self.run.local(self.folder, name)
        if not self.run.fs.exists(path):
            return None
        with self.run.fs.open(path, "rb") as fh:
            return fh.read()

    def clear(self) -> None:
        if self.run.exists(self.folder):
            self.run.fs.rm(self.run.local(self.folder), recursive=True)

    def save(self, state: LoopState) -> None:
        arrays = {
            "rows": state.rows,
            "labels": state.labels,
            "label_round": state.label_round,
            "round": np.array(state.round),
            "fingerprint": np.array(self.fingerprint),
            "history": np.array(json.dumps(state.history)),
        }
        if state.predicted is not None:
            arrays["predicted"] = np.packbits(state.predicted)
            arrays["n_predicted"] = np.array(len(state.predicted))
        if state.subsample is not None:
            arrays["subsample"] = state.subsample
        arrays.update(audit_rows=state.audit_rows, audit_q=state.audit_q, audit_round=state.audit_round)
        arrays["label_score"] = state.label_score
        arrays.update({f"head.{k}": np.asarray(v) for k, v in state.head.items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        self._write("state.npz", buf.getvalue())

    def load(self) -> LoopState | None:
        data = self._read("state.npz")
        if data is None:
            return None
        with np.load(io.BytesIO(data)) as z:
            if str(z["fingerprint"]) != self.fingerprint:
                raise ValueError(
                    f"{self.run.path(self.folder)} holds a loop started with another configuration; "
                    "rerun with its original settings, force=true to start over, or another run_dir"
                )
            predicted = None
            if "predicted" in z:
                predicted = np.unpackbits(z["predicted"])[: int(z["n_predicted"])].astype(bool)
            return LoopState(
                rows=z["rows"].astype(np.int64),
                labels=z["labels"].astype(np.int8),
                label_round=z["label_round"].astype(np.int32),
                round=int(z["round"]),
                head={k[5:]: z[k] for k in z.files if k.startswith("head.")},
                predicted=predicted,
                history=json.loads(str(z["history"])),
                subsample=z["subsample"] if "subsample" in z else None,
                **{k: z[k] for k in ("audit_rows", "audit_q", "audit_round", "label_score") if k in z},
            )

    def save_pending(self, round: int, rows: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(rows, dtype=np.int64))
        self._write(f"pending-{round:04d}.npy", buf.getvalue())

    def load_pending(self, round: int) -> np.ndarray | None:
        data = self._read(f"pending-{round:04d}.npy")
        return None if data is None else np.load(io.BytesIO(data))

    def save_audit(self, round: int, rows: np.ndarray, q: np.ndarray) -> None:
        """The round's audit draws, written before its pending batch (which holds their distinct rows)."""
        buf = io.BytesIO()
        np.savez(buf, rows=np.asarray(rows, np.int64), q=np.asarray(q, np.float64))
        self._write(f"audit-{round:04d}.npz", buf.getvalue())

    def load_audit(self, round: int) -> tuple[np.ndarray, np.ndarray] | None:
        data = self._read(f"audit-{round:04d}.npz")
        if data is None:
            return None
        with np.load(io.BytesIO(data)) as z:
            return z["rows"], z["q"]
