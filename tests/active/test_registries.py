"""The strategy and diversity registries: every entry found by name, a one-line error naming the choices,
and a new entry (one function, registered here as a new module would) selectable by config in the loop."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.active import diversity, strategies
from pipeline.active.config import ActiveConfig
from pipeline.active.labelers import OracleLabeler
from pipeline.active.loop import run_loop


def test_every_entry_is_found_by_its_module():
    assert sorted(strategies.registry()) == ["entropy", "gaussian", "least_confidence", "margin", "positive", "random"]
    assert sorted(diversity.registry()) == ["clustering", "coreset", "iterative_proximity", "none"]


@pytest.mark.parametrize(
    ("key", "choices"),
    [("strategy", "entropy, gaussian, least_confidence, margin, positive, random"),
     ("diversity", "clustering, coreset, iterative_proximity, none")],
)  # fmt: skip
def test_unknown_name_is_a_one_line_error_naming_the_choices(key: str, choices: str):
    with pytest.raises(ValueError) as err:
        ActiveConfig.from_dict({key: "bald"})
    assert str(err.value) == f"unknown {key} 'bald'; choose one of {choices}"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        strategies.register("margin")(lambda p, rng, cfg: p)
    with pytest.raises(ValueError, match="registered twice"):
        diversity.register("none")(lambda x, u, k, labeled_x, seed, cfg: np.arange(k))


@pytest.fixture
def new_entries():
    """A strategy (the likeliest negatives first) and a diversity method (records its calls), as a new module
    would register them; removed afterwards."""
    calls: list[tuple[int, int]] = []

    def likeliest_negative(p, rng, cfg):
        return 1.0 - np.asarray(p, np.float64)

    def recorded(x, u, k, labeled_x, seed, cfg):
        calls.append((len(u), k))
        return np.argsort(-u, kind="stable")[:k]

    strategies.register("likeliest_negative")(likeliest_negative)
    diversity.register("recorded")(recorded)
    try:
        yield calls
    finally:
        del strategies.STRATEGIES["likeliest_negative"], diversity.DIVERSITY["recorded"]


def test_a_new_entry_is_selected_by_config_and_runs_in_the_loop(new_entries):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 8)) * 2
    lab = rng.integers(6, size=600)
    x = (centers[lab] + rng.normal(size=(600, 8))).astype(np.float32)
    truth = lab == 1
    settings = {"budget": 0.2, "batch_size": 20, "n_neighbors": 10, "n_random": 5, "candidate_factor": 3}
    cfg = ActiveConfig.from_dict({**settings, "strategy": "likeliest_negative", "diversity": "recorded"})
    res = run_loop(x, OracleLabeler(truth), cfg, starter_rows=[int(np.flatnonzero(truth)[0])])
    assert res.stop_reason == "budget" and len(res.state.rows) == 120
    # (candidates, k) per round: candidate_factor x batch, the last round the 4 left of the budget (16 + 5 x 20)
    assert new_entries == [(60, 20)] * 5 + [(12, 4)]
    # the batches are the head's likeliest negatives; the stock `positive` strategy picks the opposite end
    picked = res.state.label_score[res.state.label_round > 0]
    opposite = run_loop(x, OracleLabeler(truth), ActiveConfig.from_dict({**settings, "strategy": "positive"}),
                        starter_rows=[int(np.flatnonzero(truth)[0])])  # fmt: skip
    assert picked.max() < 0.5 < opposite.state.label_score[opposite.state.label_round > 0].mean()
