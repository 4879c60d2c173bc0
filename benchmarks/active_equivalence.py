"""Same rounds, same files, same numbers: seeded ``run_loop`` outputs of two code versions, compared.

    .venv/bin/python -m benchmarks.active_equivalence dump OUT.pkl      # in each checkout (cwd first on sys.path)
    .venv/bin/python -m benchmarks.active_equivalence compare A.pkl B.pkl

``dump`` runs the loop on a seeded 1,500 x 16 blob pool under 15 configurations (every strategy, every
diversity method, audits with the recall / precision stop rules, scale mode, ``min_change``, ``max_rounds``,
an MLP head) plus a checkpointed run that crashes in round 2 and resumes, and pickles every state array,
the round records without their ``*_seconds`` timings, the final probabilities and the checkpoint files.
``compare`` fails on the first difference (NaN equals NaN) and names it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
from typing import Any

import numpy as np

from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import LoopResult, run_loop
from pipeline.active.state import RunDirCheckpoint
from pipeline.rundir import RunDir

BASE = {"budget": 0.1, "batch_size": 24, "n_neighbors": 16, "n_random": 8}
CONFIGS: dict[str, dict[str, Any]] = {
    **{s: {**BASE, "strategy": s} for s in ("least_confidence", "margin", "entropy", "random", "gaussian", "positive")},
    **{f"lc+{d}": {**BASE, "diversity": d, "seed": 3} for d in ("iterative_proximity", "clustering", "coreset")},
    "audit": {**BASE, "budget": 0.3, "stop": {"audit_size": 8, "recall": 0.9, "rule": "point"}, "seed": 1},
    "audit_lower": {**BASE, "budget": 0.15, "stop": {"audit_size": 6, "recall": 0.9, "precision": 0.8}, "seed": 2},
    "scale": {
        **BASE,
        "scale": {"enabled": True, "fraction": 0.2, "neighbors": 4, "sample_size": 256},
        "diversity": "clustering",
    },
    "converged": {**BASE, "budget": 0.5, "min_change": 0.01},
    "max_rounds": {**BASE, "max_rounds": 3},
    "mlp": {**BASE, "head": {"kind": "mlp", "epochs": 20}, "strategy": "margin"},
}


class CrashingOracle(OracleLabeler):
    def __init__(self, truth: np.ndarray, at: str):
        super().__init__(truth)
        self.at, self.crashed = at, False

    def label(self, rows, ids, batch):
        if batch == self.at and not self.crashed:
            self.crashed = True
            raise KeyboardInterrupt("simulated crash")
        return super().label(rows, ids, batch)


def _untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in history]


def _outputs(res: LoopResult) -> dict[str, Any]:
    s = res.state
    arrays = ("rows", "labels", "label_round", "predicted", "subsample", "audit_rows", "audit_q", "audit_round")
    return {
        **{a: getattr(s, a) for a in arrays},
        "label_score": s.label_score,
        "round": s.round,
        "head": {k: np.asarray(v) for k, v in s.head.items()},
        "history": _untimed(s.history),
        "probs": res.probs,
        "predicted_final": res.predicted,
        "stop": res.stop_reason,
    }


def dump(path: str) -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 16)) * 1.5
    lab = rng.integers(8, size=1500)
    x = (centers[lab] + rng.normal(size=(1500, 16))).astype(np.float32)
    out: dict[str, Any] = {}
    truth = lab == 2
    starters = x[np.flatnonzero(truth)[5:7]] + 0.1
    for name, c in CONFIGS.items():
        res = run_loop(
            x,
            OracleLabeler(truth),
            ActiveConfig.from_dict(c),
            starter_rows=[int(np.flatnonzero(truth)[0])],
            starter_vectors=starters,
            truth=truth,
        )
        out[name] = _outputs(res)
    truth = lab == 4
    cfg = ActiveConfig.from_dict(
        {**BASE, "stop": {"audit_size": 5}, "strategy": "gaussian", "diversity": "iterative_proximity", "seed": 5}
    )
    with tempfile.TemporaryDirectory() as d:
        run, oracle = RunDir(os.path.join(d, "run")), CrashingOracle(truth, "active-round-0002")
        starter = [int(np.flatnonzero(truth)[1])]
        try:
            run_loop(x, oracle, cfg, starter_rows=starter, truth=truth, checkpoint=RunDirCheckpoint(run, "f"))
        except KeyboardInterrupt:
            pass
        res = run_loop(x, oracle, cfg, starter_rows=starter, truth=truth, checkpoint=RunDirCheckpoint(run, "f"))
        out["resumed"] = _outputs(res)
        files = {}
        for root, _, names in os.walk(run.root):
            for f in names:
                p = os.path.join(root, f)
                if f == "state.npz":
                    with np.load(p) as z:
                        files[f] = {k: _untimed(json.loads(str(z[k]))) if k == "history" else z[k] for k in z.files}
                else:
                    files[f] = open(p, "rb").read()
        out["checkpoint_files"] = files
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    print(f"{path}: {len(CONFIGS) + 1} runs, {len(files)} checkpoint files")


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (u, v) in enumerate(zip(a, b)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{where}: arrays differ"
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("dump").add_argument("out")
    cmp = sub.add_parser("compare")
    cmp.add_argument("a")
    cmp.add_argument("b")
    args = ap.parse_args()
    if args.command == "dump":
        dump(args.out)
        return
    with open(args.a, "rb") as fa, open(args.b, "rb") as fb:
        a, b = pickle.load(fa), pickle.load(fb)
    _same(a, b, "")
    print(f"identical (timings aside): {', '.join(sorted(a))}")


if __name__ == "__main__":
    main()
