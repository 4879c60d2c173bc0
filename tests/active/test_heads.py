"""Classifier heads: logistic regression against scikit-learn, warm start, standardisation, MLP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pipeline.active.config import ActiveConfig
from pipeline.active.heads import LogisticHead, MLPHead, build_head, class_weights

HEAD = ActiveConfig.from_dict({}).head  # conf/active/default.yaml's head node
LOGISTIC = {k: HEAD[k] for k in ("c", "max_iter", "class_weight")}
MLP = {k: HEAD[k] for k in ("weight_decay", "class_weight")}


def _data(n: int = 300, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=d) + 0.8 * rng.normal(size=n) > 1.2).astype(np.int8)  # imbalanced
    return x, y


def test_class_weights_by_hand() -> None:
    np.testing.assert_allclose(class_weights(np.array([1, 0, 0, 0])), [2.0, 2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(class_weights(np.array([0, 0]), "balanced"), [1.0, 1.0])
    np.testing.assert_allclose(class_weights(np.array([1, 0]), 3.0), [3.0, 1.0])
    with pytest.raises(ValueError):
        class_weights(np.array([1, 0]), "auto")


@pytest.mark.parametrize("class_weight", ["balanced", None])
@pytest.mark.parametrize("c", [0.1, 10.0])
def test_logistic_matches_sklearn(class_weight, c: float) -> None:
    x, y = _data()
    ref = LogisticRegression(C=c, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(x, y)
    head = LogisticHead(c=c, class_weight=class_weight or "none", tol=1e-9, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(head.coef, ref.coef_[0], atol=2e-4, rtol=1e-3)
    assert head.intercept == pytest.approx(ref.intercept_[0], abs=2e-4)
    np.testing.assert_allclose(head.predict_proba(x), ref.predict_proba(x)[:, 1], atol=5e-4)


def test_standardisation_is_folded_into_the_weights() -> None:
    x, y = _data(d=4)
    x = x * np.array([1.0, 10.0, 0.1, 3.0], np.float32) + 5.0
    mu, sd = x.mean(0), x.std(0)
    head = LogisticHead(**{**LOGISTIC, "tol": 1e-9})
    head.set_feature_stats(mu, sd)
    head.fit(x, y)
    plain = LogisticHead(**{**LOGISTIC, "tol": 1e-9}).fit((x - mu) / sd, y)
    np.testing.assert_allclose(head.decision_function(x), plain.decision_function((x - mu) / sd), atol=1e-4)


def test_warm_start_reaches_the_same_optimum_faster() -> None:
    x, y = _data(n=400)
    cold = LogisticHead(**{**LOGISTIC, "tol": 1e-8}).fit(x, y)
    warm = LogisticHead(**{**LOGISTIC, "tol": 1e-8}).fit(x[:300], y[:300])
    warm.fit(x, y)
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-4)
    assert warm.n_iter <= cold.n_iter


def test_state_round_trip_and_errors() -> None:
    x, y = _data()
    for head in (
        build_head({**HEAD, "kind": "logistic"}),
        build_head({**HEAD, "kind": "mlp", "hidden": 16, "epochs": 20}),
    ):
        head.fit(x, y)
        other = build_head({**HEAD, "kind": head.kind, "hidden": 16})
        other.load_state(head.state())
        np.testing.assert_allclose(other.decision_function(x), head.decision_function(x), atol=1e-6)
    with pytest.raises(ValueError, match="binary"):
        LogisticHead(**LOGISTIC).fit(x, np.full(len(x), 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticHead(**LOGISTIC).predict_proba(x)
    with pytest.raises(ValueError, match="head.kind must be one of logistic, mlp, got 'svm'"):
        build_head({**HEAD, "kind": "svm"})
    with pytest.raises(ValueError, match="missing"):
        build_head({"kind": "logistic"})


def test_mlp_learns_a_nonlinear_boundary_deterministically() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(600, 2)).astype(np.float32)
    y = ((x**2).sum(1) < 0.4).astype(np.int8)  # a disc: no linear head separates it
    mlp = MLPHead(hidden=32, epochs=400, lr=0.02, seed=1, **MLP).fit(x, y)
    acc = ((mlp.predict_proba(x) >= 0.5) == y).mean()
    lin = ((LogisticHead(**LOGISTIC).fit(x, y).predict_proba(x) >= 0.5) == y).mean()
    assert acc > 0.95 and acc > lin + 0.2
    again = MLPHead(hidden=32, epochs=400, lr=0.02, seed=1, **MLP).fit(x, y)
    np.testing.assert_allclose(again.decision_function(x), mlp.decision_function(x), atol=1e-5)
