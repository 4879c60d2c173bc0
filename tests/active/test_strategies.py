"""Selection strategies against hand-computed values on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.active.config import ActiveConfig
from pipeline.active.strategies import priority, top_k
from pipeline.active.strategies.entropy import entropy
from pipeline.active.strategies.gaussian import gaussian_weights
from pipeline.active.strategies.least_confidence import least_confidence
from pipeline.active.strategies.margin import margin

P = np.array([0.9, 0.5, 0.2, 0.6, 0.0])
CFG = ActiveConfig.from_dict({"sigma": 0.1})


def test_binary_scores_by_hand() -> None:
    np.testing.assert_allclose(least_confidence(P), [0.1, 0.5, 0.2, 0.4, 0.0], atol=1e-6)
    np.testing.assert_allclose(margin(P), [0.2, 1.0, 0.4, 0.8, 0.0], atol=1e-6)
    h = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p))  # noqa: E731
    np.testing.assert_allclose(entropy(P), [h(0.9), np.log(2), h(0.2), h(0.6), 0.0], atol=1e-6)


def test_multiclass_scores_differ() -> None:
    q = np.array([[0.5, 0.3, 0.2], [0.45, 0.45, 0.1], [0.4, 0.3, 0.3]])
    np.testing.assert_allclose(least_confidence(q), [0.5, 0.55, 0.6], atol=1e-6)
    np.testing.assert_allclose(margin(q), [0.8, 1.0, 0.9], atol=1e-6)
    np.testing.assert_allclose(entropy(q), -(q * np.log(q)).sum(1), atol=1e-6)
    # least confidence prefers row 2, margin row 1: the strategies are not the same for C > 2
    assert np.argmax(least_confidence(q)) == 2 and np.argmax(margin(q)) == 1


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("least_confidence", [1, 3, 2, 0, 4]),
        ("margin", [1, 3, 2, 0, 4]),
        ("entropy", [1, 3, 2, 0, 4]),
        ("positive", [0, 3, 1, 2, 4]),
    ],
)
def test_priority_order(strategy: str, expected: list[int]) -> None:
    u = priority(strategy, P, np.random.default_rng(0), CFG)
    assert top_k(u, 5).tolist() == expected


def test_top_k_ties_go_to_lower_position() -> None:
    assert top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2).tolist() == [1, 2]
    assert top_k(np.array([1.0, 3.0, 3.0]), 10).tolist() == [1, 2, 0]
    assert top_k(np.zeros(4), 0).tolist() == []


def test_gaussian_weights_and_sampling() -> None:
    np.testing.assert_allclose(
        gaussian_weights(np.array([0.5, 0.6, 0.3]), sigma=0.1), [1.0, np.exp(-0.5), np.exp(-2.0)], rtol=1e-5
    )
    p = np.array([0.5] * 50 + [0.99] * 950)
    picks = np.concatenate([top_k(priority("gaussian", p, np.random.default_rng(s), CFG), 20) for s in range(20)])
    # 50 images with weight 1 vs 950 with weight exp(-0.49^2/0.02) ~ 6e-6: the sample is all from the first 50
    assert (picks < 50).all()
    a = priority("gaussian", p, np.random.default_rng(3), CFG)
    b = priority("gaussian", p, np.random.default_rng(3), CFG)
    np.testing.assert_array_equal(a, b)


def test_random_is_uniform_without_replacement() -> None:
    counts = np.zeros(10)
    for s in range(2000):
        pick = top_k(priority("random", np.full(10, 0.5), np.random.default_rng(s), CFG), 3)
        assert len(set(pick.tolist())) == 3
        counts[pick] += 1
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.05)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        priority("bald", P, np.random.default_rng(0), CFG)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        least_confidence(np.array([1.5]))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_weights(P, sigma=0)
