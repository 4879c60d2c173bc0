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
from pipeline.active.stopping import audit_probabilities, draw_audit, estimate_export, estimate_recall
from pipeline.rundir import RunDir

STOP = ActiveConfig.from_dict({}).stop  # conf/active/default.yaml's stop node (confidence 0.95)


def _label_round(
    log: dict[str, list], n: int, r: int, priority, audit_score: np.ndarray, k: int, m: int, uniform_share: float, rng
) -> None:
    """One simulated round: the k unlabeled rows of highest ``priority(rows)``, then m audit draws from the
    rest, appended to ``log`` (rows, rnd: labeled rows and their round; a_rows, a_q, a_round: the draws)."""
    labeled = np.zeros(n, dtype=bool)
    labeled[log["rows"]] = True
    unlabeled = np.flatnonzero(~labeled)
    batch = unlabeled[np.argsort(-priority(unlabeled))[:k]]
    labeled[batch] = True
    rest = np.flatnonzero(~labeled)
    d_rows, d_q = draw_audit(rest, audit_score[rest], m, uniform_share, rng)
    new = np.concatenate([batch, np.setdiff1d(np.unique(d_rows), batch)])
    log["rows"] += new.tolist()
    log["rnd"] += [r] * len(new)
    log["a_rows"] += d_rows.tolist()
    log["a_q"] += d_q.tolist()
    log["a_round"] += [r] * len(d_rows)


def _simulated_run(seed: int, rounds: int = 5, n: int = 1000, n_pos: int = 40, k: int = 16, m: int = 12):
    """An active process on a pool with known truth: each round the top-k noisy scores, then m audit
    draws. Yields (true remaining positives, estimate) after every round."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=bool)
    y[rng.choice(n, n_pos, replace=False)] = True
    score = np.where(y, rng.beta(3, 2, n), rng.beta(1, 12, n))
    log = {"rows": list(rng.choice(n, 20, replace=False)), "rnd": [0] * 20, "a_rows": [], "a_q": [], "a_round": []}
    rows, rnd, a_rows, a_q, a_round = log["rows"], log["rnd"], log["a_rows"], log["a_q"], log["a_round"]
    for r in range(1, rounds + 1):
        _label_round(log, n, r, lambda u: score[u] + rng.normal(0, 0.1, len(u)), score, k, m, 0.5, rng)
        rr = np.array(rows)
        est = estimate_recall(
            rr,
            y[rr].astype(np.int8),
            np.array(rnd),
            np.array(a_rows),
            np.array(a_q),
            np.array(a_round),
            confidence=STOP.confidence,
            window=3,
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
    assert estimate_recall([1, 2], [1, 0], [0, 0], empty, empty, empty, confidence=STOP.confidence) is None
    # round 1 audited rows 5 (positive, drawn twice) and 6; row 7 (positive) labeled in round 2
    est = estimate_recall(
        rows=[1, 2, 5, 6, 7],
        labels=[1, 0, 1, 0, 1],
        label_round=[0, 0, 1, 1, 2],
        audit_rows=np.array([5, 5, 6]),
        audit_q=np.array([0.1, 0.1, 0.01]),
        audit_round=np.array([1, 1, 1]),
        confidence=STOP.confidence,
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
    assert res.stop_reason == "recall" and last["exported_recall_est"] >= 0.9
    assert last["stop_rule"] == f"exported_recall_est {last['exported_recall_est']:.3f} >= 0.9"
    assert len(res.state.rows) < 0.5 * len(x) and last["positives_retrieved"] >= 0.85
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
    assert all(h["exported_recall_lo"] < 0.9 for h in strict.state.history[:-1] if h["exported_recall_lo"] is not None)


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
    for key in ("labeled_recall_est", "exported_recall_est", "model_precision_est"):
        assert [h[key] for h in res.state.history] == [h[key] for h in ref.state.history]


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
    for name in ("labeled_recall", "exported_recall", "model_precision"):
        assert 0 <= summary[f"{name}_lo"] <= summary[f"{name}_est"] <= summary[f"{name}_hi"] <= 1
    assert summary["stop_recall"] == 0.99 and summary["stop_precision"] is None and summary["audit_labeled"] > 0
    assert summary["stop_reason"] == "budget" and summary["stop_rule"] is None
    assert [r["round"] for r in summary["audit_rounds"]] == list(range(1, res.state.round + 1))
    assert summary["audit_rounds"][-1]["exported_recall_est"] == summary["exported_recall_est"]
    from pipeline.report import gather, render

    html = render(gather(RunDir(str(tmp_path / "run")), {}))
    assert "Estimated recall of the exported set (human + model positives)" in html
    assert "Estimated share of the positives labeled by a person (audit)" in html
    assert (
        f"After round {res.state.round} the exported set (human labels plus the model's "
        f"{summary['n_model_positive']} positive calls) holds an estimated <b>{summary['exported_recall_est']:.0%}</b>"
    ) in html
    line = recall_line(res.state.history[-1], 0.99)
    assert line.startswith("exported recall ≈") and "model precision ≈" in line and "labeled by you ≈" in line
    assert line.endswith("(stop at recall 0.99)") and recall_line({"exported_recall_est": None}, 0.9) is None
    assert recall_line(res.state.history[-1], 0.95, 0.9).endswith("(stop at recall 0.95, precision 0.90)")


def test_report_reads_rounds_written_before_the_rename(tmp_path) -> None:
    """A run directory from before issue 30 (``recall_est`` = the labeled share) still renders its sentence."""
    import pyarrow as pa

    from pipeline.artifacts import ACTIVE_ROUNDS
    from pipeline.io.tables import write_parquet_atomic
    from pipeline.report import gather, render

    run = RunDir(str(tmp_path / "old"))
    old = {"round": [1], "n_labeled": [120], "recall_est": [0.4], "recall_lo": [0.2], "recall_hi": [0.8]}
    old |= {"audit_labeled": [16], "audit_positive": [3]}
    write_parquet_atomic(pa.table(old), run.path(ACTIVE_ROUNDS))
    html = render(gather(run, {}))
    assert "People labeled an estimated <b>40%</b> of the pool's positives themselves (interval 20% to 80%)" in html


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
    store.set_status("exported recall ≈0.91 [0.80, 0.97]")
    assert (
        LabelStore(tmp_path / "labels.sqlite", synchronous="NORMAL").progress().as_dict()["status"]
        == "exported recall ≈0.91 [0.80, 0.97]"
    )


def test_stop_config_errors() -> None:
    with pytest.raises(ValueError, match="stop.recall needs stop.audit_size"):
        ActiveConfig.from_dict({"stop": {"recall": 0.9}})
    with pytest.raises(ValueError, match="unknown active.stop keys"):
        ActiveConfig.from_dict({"stop": {"audit": 3}})
    with pytest.raises(ValueError, match="stop.rule"):
        ActiveConfig.from_dict({"stop": {"rule": "mean"}})
    with pytest.raises(ValueError, match="stop.precision needs stop.audit_size"):
        ActiveConfig.from_dict({"stop": {"precision": 0.9}})
    with pytest.raises(ValueError, match="stop.precision must be in"):
        ActiveConfig.from_dict({"stop": {"audit_size": 4, "precision": 1.5}})
    with pytest.raises(ValueError, match="stop.folds"):
        ActiveConfig.from_dict({"stop": {"folds": 1}})


def test_crossfit_scores_never_score_a_row_with_its_own_label() -> None:
    from pipeline.active.stopping import crossfit_scores

    calls = []

    def fit_predict(keep: np.ndarray, held: np.ndarray) -> np.ndarray:
        calls.append((keep.copy(), held.copy()))
        assert not keep[held].any() and keep.sum() == len(keep) - len(held)
        return held.astype(np.float64)  # "score" = the row's own index, to check the placement

    targets = np.array([3, 5, 6, 8, 9, 12, 13])
    out = crossfit_scores(fit_predict, 15, targets, 3, np.random.default_rng(0))
    assert len(calls) == 3 and np.array_equal(out, targets)
    assert sorted(np.concatenate([h for _, h in calls]).tolist()) == targets.tolist()
    assert all(keep[[0, 1, 2, 14]].all() for keep, _ in calls)  # rows that are no target always train
    assert len(crossfit_scores(fit_predict, 15, np.zeros(0, np.int64), 3, np.random.default_rng(0))) == 0


def _simulated_export(
    seed: int, rounds: int = 4, n: int = 3000, k: int = 24, m: int = 16, overconfidence: float = 1.0, calibrate=False
):
    """A pool with known truth ``y ~ Bernoulli(p)`` and a simulated head whose scores are
    ``sigmoid(overconfidence * logit p)`` (1: calibrated; fixed over the rounds, so labeled rows get the score a
    cross-fitted head, or the head that picked them, would give): least-confident batches of k plus m audit draws
    a round; ``calibrate``: the labeled rows' scores fit the calibration map.
    Yields (true exported recall, true model precision, true FP, true FN, estimate) after every round."""
    rng = np.random.default_rng(seed)
    logit = np.where(rng.random(n) < 0.06, rng.normal(3.0, 2.0, n), rng.normal(-6.0, 2.0, n))
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    p = 1 / (1 + np.exp(-overconfidence * logit))
    log = {"rows": list(rng.choice(n, 30, replace=False)), "rnd": [0] * 30, "a_rows": [], "a_q": [], "a_round": []}
    rows, rnd, a_rows, a_q, a_round = log["rows"], log["rnd"], log["a_rows"], log["a_q"], log["a_round"]
    for r in range(1, rounds + 1):
        _label_round(log, n, r, lambda u: -np.abs(p[u] - 0.5), p, k, m, 0.2, rng)  # least confident first
        rr = np.array(rows)
        unl = np.ones(n, dtype=bool)
        unl[rr] = False
        est = estimate_export(
            rr,
            y[rr].astype(np.int8),
            np.array(rnd),
            p[rr],
            p[unl],
            np.array(a_rows),
            np.array(a_q),
            np.array(a_round),
            threshold=0.5,
            confidence=STOP.confidence,
            window=3,
            calibration_scores=p[rr] if calibrate else None,
            calibration_ridge=STOP.calibration_ridge,
        )
        called = unl & (p >= 0.5)
        tp, fp_true, fn_true = int((called & y).sum()), int((called & ~y).sum()), int((unl & ~called & y).sum())
        yield (y[rr].sum() + tp) / y.sum(), tp / max(called.sum(), 1), fp_true, fn_true, est


def test_export_estimates_track_the_truth_and_the_audit_parts_are_unbiased() -> None:
    """100 seeded simulated runs x 4 rounds: the exported recall and the model
    precision are within 0.03 of the truth on average, the 95% intervals cover >= 90% of rounds, and the
    audit's own (design-based) totals of missed positives and false calls are unbiased within 4 standard
    errors (forgetting the rows labeled after an audit breaks them: checked)."""
    rec_err, prec_err, covered, fn_err, fp_err = [], [], [], [], []
    for seed in range(100):
        for true_recall, true_precision, fp_true, fn_true, est in _simulated_export(seed):
            rec_err.append(est.exported_recall_est - true_recall)
            prec_err.append(est.model_precision_est - true_precision)
            covered.append(est.exported_recall_lo <= true_recall + 1e-4 <= est.exported_recall_hi + 2e-4)
            covered.append(est.model_precision_lo <= true_precision + 1e-4 <= est.model_precision_hi + 2e-4)
            fn_err.append(est.missed_audit - fn_true)
            fp_err.append(est.false_calls_audit - fp_true)
    assert np.mean(np.abs(rec_err)) < 0.03 and np.mean(np.abs(prec_err)) < 0.03
    assert np.mean(covered) >= 0.9
    for err in (np.array(fn_err), np.array(fp_err)):
        assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err)), (err.mean(), err.std())


def test_exported_estimates_on_a_simulated_labeler(tmp_path) -> None:
    """The real loop with an oracle labeler on blobs: the estimates of the exported set follow the oracle's
    truth (``positives_retrieved``, ``precision``), and ``stop.precision`` joins the recall rule."""
    x, truth = _blobs(900, seed=3)
    base = {"budget": 0.4, "batch_size": 24, "n_neighbors": 16, "n_random": 8, "seed": 1}
    res = run_loop(
        x,
        OracleLabeler(truth),
        ActiveConfig.from_dict({**base, "stop": {"audit_size": 16}}),
        starter_rows=[int(np.flatnonzero(truth)[0])],
        truth=truth,
    )
    recs = [h for h in res.state.history if h.get("exported_recall_est") is not None]
    assert len(recs) >= 5
    err = [abs(h["exported_recall_est"] - h["positives_retrieved"]) for h in recs]
    assert np.mean(err) < 0.05
    assert (
        np.mean([h["exported_recall_lo"] <= h["positives_retrieved"] <= h["exported_recall_hi"] for h in recs]) >= 0.8
    )
    stopped = run_loop(
        x,
        OracleLabeler(truth),
        ActiveConfig.from_dict({**base, "stop": {"audit_size": 16, "recall": 0.9, "precision": 0.9, "rule": "point"}}),
        starter_rows=[int(np.flatnonzero(truth)[0])],
        truth=truth,
    )
    last = stopped.state.history[-1]
    assert stopped.stop_reason == "recall+precision"
    assert last["exported_recall_est"] >= 0.9 and last["model_precision_est"] >= 0.9
    assert last["stop_rule"].startswith("exported_recall_est") and "model_precision_est" in last["stop_rule"]
    assert all(
        h["exported_recall_est"] is None or h["exported_recall_est"] < 0.9 or h["model_precision_est"] < 0.9
        for h in stopped.state.history[:-1]
    )


def test_calibration_map_matches_a_logistic_fit() -> None:
    """The Platt map's (a, b) without the ridge = scikit-learn's unpenalised logistic regression on logit(p);
    the ridge pulls it toward the identity; too few labels of a class give the identity."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.active.stopping import calibrate, fit_calibration

    rng = np.random.default_rng(0)
    p = rng.uniform(0.001, 0.999, 4000)
    y = rng.random(4000) < calibrate(p, 0.6, -0.4)
    a, b = fit_calibration(p, y.astype(np.int8), 0.0)
    z = np.log(p / (1 - p))[:, None]
    ref = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000).fit(z, y)
    assert a == pytest.approx(ref.coef_[0, 0], abs=1e-3) and b == pytest.approx(ref.intercept_[0], abs=1e-3)
    a_ridge, _ = fit_calibration(p[:60], y[:60].astype(np.int8), 50.0)
    assert abs(a_ridge - 1.0) < abs(fit_calibration(p[:60], y[:60].astype(np.int8), 0.0)[0] - 1.0)
    assert fit_calibration(p[:5], np.array([1, 0, 0, 0, 0]), 0.0) == (1.0, 0.0)


@pytest.mark.slow
def test_calibrated_estimate_is_unbiased_where_the_head_is_overconfident() -> None:
    """A head twice as confident as the truth (logits x 2): its own expected errors undercount the missed
    positives, so the old estimate (the head's sums) overstates the exported recall by > 0.1; the calibrated one,
    fit on the labeled rows' out-of-sample scores, cuts that bias at least threefold (its slope is shrunk a little toward
    1 by the ridge and the labels near the boundary), and the prediction-powered interval covers >= 90%."""
    old, new, covered = [], [], []
    for seed in range(40):
        runs = zip(
            _simulated_export(seed, overconfidence=2.0), _simulated_export(seed, overconfidence=2.0, calibrate=True)
        )
        for (true_recall, true_precision, _, _, before), (_, _, _, _, after) in runs:
            old.append(before.exported_recall_est - true_recall)
            new.append(after.exported_recall_est - true_recall)
            covered.append(after.exported_recall_lo <= true_recall + 1e-4 <= after.exported_recall_hi + 2e-4)
            covered.append(after.model_precision_lo <= true_precision + 1e-4 <= after.model_precision_hi + 2e-4)
    old, new = np.array(old), np.array(new)
    assert old.mean() > 0.1, old.mean()  # the head's own sums: far too optimistic
    assert abs(new.mean()) < old.mean() / 3 and np.abs(new).mean() < np.abs(old).mean() / 1.5, (new.mean(), old.mean())
    assert np.mean(covered) >= 0.9, np.mean(covered)
