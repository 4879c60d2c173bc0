"""Knowing when to stop: the audit estimator on synthetic pools with a known truth, the stop rule,
the audit across a crash, summary.json and the labeler's status line."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop
from pipeline.active.metrics import run_metrics
from pipeline.active.run import recall_line, write_outputs
from pipeline.active.state import RunDirCheckpoint
from pipeline.active.stopping import audit_probabilities, draw_audit, estimate_recall
from pipeline.rundir import RunDir


def _simulated_run(seed: int, rounds: int = 5, n: int = 1000, n_pos: int = 40, k: int = 16, m: int = 12):
    """An active process on a pool with known truth: each round the top-k noisy scores, then m audit
    draws. Yields (true remaining positives, estimate) after every round."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[rng.choice(n, n_pos, replace=False)] = True
    score = np.where(y, rng.beta(3, 2, n), rng.beta(1, 12, n))
    rows, rnd = list(rng.choice(n, 20, replace=False)), [0] * 20
    a_rows, a_q, a_round = [], [], []
    for r in range(1, rounds + 1):
        labeled = np.zeros(n, dtype=bool)
        labeled[rows] = True
        unlabeled = np.flatnonzero(~labeled)
        batch = unlabeled[np.argsort(-(score[unlabeled] + rng.normal(0, 0.1, len(unlabeled))))[:k]]
        labeled[batch] = True
        rest = np.flatnonzero(~labeled)
        d_rows, d_q = draw_audit(rest, score[rest], m, 0.5, rng)
        new = np.concatenate([batch, np.setdiff1d(np.unique(d_rows), batch)])
        rows += new.tolist()
        rnd += [r] * len(new)
        a_rows += d_rows.tolist()
        a_q += d_q.tolist()
        a_round += [r] * len(d_rows)
        rr = np.array(rows)
        est = estimate_recall(
            rr, y[rr].astype(np.int8), np.array(rnd), np.array(a_rows), np.array(a_q), np.array(a_round), window=3
        )
        yield int(y.sum() - y[rr].sum()), int(y[rr].sum()) / n_pos, est


def test_audit_probabilities_mix_scores_with_a_uniform_floor() -> None:
    q = audit_probabilities(np.array([0.9, 0.1, 0.0, np.nan]), 0.5)
    assert q.sum() == pytest.approx(1.0) and (q >= 0.5 / 4 - 1e-12).all()
    assert q[0] == pytest.approx(0.5 * 0.9 + 0.125) and q[2] == q[3] == pytest.approx(0.125)
    assert np.allclose(audit_probabilities(np.zeros(5), 0.2), 0.2)
    rows, qs = draw_audit(np.arange(10, 14), np.array([0.9, 0.1, 0.0, np.nan]), 500, 0.5, np.random.default_rng(0))
    assert set(rows.tolist()) <= {10, 11, 12, 13} and np.allclose(qs, q[rows - 10])
    assert np.mean(rows == 10) == pytest.approx(q[0], abs=0.06)


def test_estimator_is_unbiased_and_its_interval_covers_the_truth() -> None:
    """200 seeded runs x 5 rounds: the remaining-positives error averages to ~0 (a biased estimator,
    e.g. one that forgets the positives labeled after an audit, fails the 4-standard-error bound) and
    the 95% interval holds the true recall in >= 90% of the rounds."""
    errors, covered, widths = [], [], []
    for seed in range(200):
        for remaining, true_recall, est in _simulated_run(seed):
            errors.append(est.remaining_raw - remaining)
            covered.append(est.recall_lo <= true_recall <= est.recall_hi)
            widths.append(est.recall_hi - est.recall_lo)
    errors = np.array(errors)
    se = errors.std() / np.sqrt(len(errors))
    assert abs(errors.mean()) < 4 * se, (errors.mean(), se)
    assert np.mean(covered) >= 0.9
    assert np.mean(widths) < 0.95  # informative, not [0, 1]


def test_no_estimate_before_the_first_audit_and_counts() -> None:
    empty = np.zeros(0)
    assert estimate_recall([1, 2], [1, 0], [0, 0], empty, empty, empty) is None
    # round 1 audited rows 5 (positive, drawn twice) and 6; row 7 (positive) labeled in round 2
    est = estimate_recall(
        rows=[1, 2, 5, 6, 7],
        labels=[1, 0, 1, 0, 1],
        label_round=[0, 0, 1, 1, 2],
        audit_rows=np.array([5, 5, 6]),
        audit_q=np.array([0.1, 0.1, 0.01]),
        audit_round=np.array([1, 1, 1]),
    )
    # P^ = (10 + 10 + 0) / 3; minus the audit's own positive and the later one
    assert est.remaining_raw == pytest.approx(20 / 3 - 2)
    assert est.found == 3 and est.audit_labeled == 2 and est.audit_positive == 1 and est.audit_draws == 3
    assert est.recall_est == pytest.approx(3 / (3 + 20 / 3 - 2), abs=1e-4)
    assert est.recall_lo <= est.recall_est <= est.recall_hi <= 1.0


def _blobs(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 16)) * 2
    lab = rng.integers(6, size=n)
    return (centers[lab] + rng.normal(size=(n, 16))).astype(np.float32), lab == 2


def test_stop_rule_ends_the_loop_before_the_budget() -> None:
    x, truth = _blobs(800)
    base = {"budget": 0.5, "batch_size": 32, "n_neighbors": 16, "n_random": 8}
    stop = {"audit_size": 16, "recall": 0.9, "rule": "point"}
    res = run_loop(
        x,
        OracleLabeler(truth),
        ActiveConfig.from_dict({**base, "stop": stop}),
        starter_rows=[int(np.flatnonzero(truth)[0])],
        truth=truth,
    )
    last = res.state.history[-1]
    assert res.stop_reason == "recall" and last["recall_est"] >= 0.9
    assert len(res.state.rows) < 0.5 * len(x) and last["recall_labeled"] >= 0.8
    audited = res.state.audit_round
    assert len(audited) == 16 * res.state.round and set(np.unique(res.state.audit_round)) == set(
        range(1, res.state.round + 1)
    )
    assert np.isin(res.state.audit_rows, res.state.rows).all()
    # the interval's lower bound is the stricter rule: it stops no earlier
    strict = run_loop(
        x,
        OracleLabeler(truth),
        ActiveConfig.from_dict({**base, "stop": {**stop, "rule": "lower"}}),
        starter_rows=[int(np.flatnonzero(truth)[0])],
        truth=truth,
    )
    assert strict.state.round >= res.state.round
    assert all(h["recall_lo"] < 0.9 for h in strict.state.history[:-1] if h["recall_lo"] is not None)


class _Crash(OracleLabeler):
    def __init__(self, truth: np.ndarray, at: str):
        super().__init__(truth)
        self.at, self.crashed = at, False

    def label(self, rows, ids, batch):
        if batch == self.at and not self.crashed:
            self.crashed = True
            raise KeyboardInterrupt("crash")
        return super().label(rows, ids, batch)


def test_audit_draws_survive_a_crash(tmp_path) -> None:
    x, truth = _blobs(600)
    cfg = ActiveConfig.from_dict(
        {"budget": 0.3, "batch_size": 24, "n_neighbors": 16, "n_random": 8, "stop": {"audit_size": 8}}
    )
    starter = [int(np.flatnonzero(truth)[0])]
    ref = run_loop(x, OracleLabeler(truth), cfg, starter_rows=starter)
    ckpt = RunDirCheckpoint(RunDir(str(tmp_path / "run")), "fp")
    labeler = _Crash(truth, "active-round-0003")
    with pytest.raises(KeyboardInterrupt):
        run_loop(x, labeler, cfg, starter_rows=starter, checkpoint=ckpt)
    res = run_loop(x, labeler, cfg, starter_rows=starter, checkpoint=ckpt)
    assert np.array_equal(res.state.rows, ref.state.rows)
    assert np.array_equal(res.state.audit_rows, ref.state.audit_rows) and np.allclose(
        res.state.audit_q, ref.state.audit_q
    )
    assert [h["recall_est"] for h in res.state.history] == [h["recall_est"] for h in ref.state.history]


def test_summary_fields_and_recall_unknown_without_oracle(tmp_path) -> None:
    x, truth = _blobs(600)
    cfg = {"active": {"stop": {"audit_size": 8, "recall": 0.99}}, "export": {"imagefolder": "none"}}
    loop_cfg = ActiveConfig.from_dict(
        {"budget": 0.3, "batch_size": 24, "n_neighbors": 16, "n_random": 8, **cfg["active"]}
    )
    res = run_loop(x, OracleLabeler(truth), loop_cfg, starter_rows=[int(np.flatnonzero(truth)[0])])
    ids = np.array([f"i{i}" for i in range(len(x))])
    summary = write_outputs(RunDir(str(tmp_path / "run")), res, ids, [""] * len(x), None, cfg)
    assert summary["recall"] is None and "f1" not in summary  # no oracle: unknown, not 0
    assert 0 < summary["recall_lo"] <= summary["recall_est"] <= summary["recall_hi"] <= 1
    assert summary["stop_recall"] == 0.99 and summary["audit_labeled"] > 0
    assert [r["round"] for r in summary["audit_rounds"]] == list(range(1, res.state.round + 1))
    assert summary["audit_rounds"][-1]["recall_est"] == summary["recall_est"]
    from pipeline.report import gather, render

    html = render(gather(RunDir(str(tmp_path / "run")), {}))
    assert "Estimated recall of the labeled set (audit)" in html
    assert (
        f"After round {res.state.round} the labeled set holds an estimated <b>{summary['recall_est']:.0%}</b>" in html
    )
    line = recall_line(res.state.history[-1], 0.99)
    assert line.startswith("≈") and "stop at 0.99" in line and recall_line({"recall_est": None}, 0.9) is None


def test_oracle_recall_is_unknown_once_every_positive_is_labeled() -> None:
    truth = np.array([1, 1, 0, 0, 0], dtype=bool)
    m = run_metrics(truth, [0, 1], [1, 1], np.zeros(5, dtype=bool))
    assert m["recall"] is None and m["f1"] is None and m["recall_labeled"] == 1.0
    m = run_metrics(truth, [0], [1], np.array([0, 1, 0, 0, 0], dtype=bool))
    assert m["recall"] == 1.0 and m["recall_labeled"] == 0.5


def test_labeler_progress_carries_the_status_line(tmp_path) -> None:
    from pipeline.labeler import LabelStore

    store = LabelStore(tmp_path / "labels.sqlite", synchronous="NORMAL")
    assert store.progress().as_dict()["status"] is None
    store.set_status("recall ≈0.91 [0.80, 0.97]")
    assert (
        LabelStore(tmp_path / "labels.sqlite", synchronous="NORMAL").progress().as_dict()["status"]
        == "recall ≈0.91 [0.80, 0.97]"
    )


def test_stop_config_errors() -> None:
    with pytest.raises(ValueError, match="stop.recall needs stop.audit_size"):
        ActiveConfig.from_dict({"stop": {"recall": 0.9}})
    with pytest.raises(ValueError, match="unknown active.stop keys"):
        ActiveConfig.from_dict({"stop": {"audit": 3}})
    with pytest.raises(ValueError, match="stop.rule"):
        ActiveConfig.from_dict({"stop": {"rule": "mean"}})
