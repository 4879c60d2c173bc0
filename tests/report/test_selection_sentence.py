"""The report's selection sentence: the objective run and what it did to small concepts, from the data."""

from __future__ import annotations

import numpy as np

from pipeline.report.data import LabelBalance, LevelSizes, ReportData
from pipeline.report.html import _resolved, selection_sentence


def test_selection_sentence_names_the_objective_and_counts_small_concepts():
    top = LevelSizes(2, before=np.array([100, 50, 4, 2, 0, 20, 3, 1]), after=np.array([4, 4, 2, 2, 0, 4, 0, 1]))
    data = ReportData(root="r", levels=[top], selection={"strategy": "auto", "objective": "typical"})
    data.labels = LabelBalance({"a": (150, 10), "b": (20, 4), "c": (10, 3)})
    text = selection_sentence(data)
    assert "<b>typical</b>: densest points of each cluster" in text and "sample.strategy=auto chose it" in text
    # 7 non-empty clusters; the smallest quarter: sizes <= quantile(.25) = 2.5 -> clusters of 2 and 1
    assert "the 2 smallest top-level clusters (at most 2 images each, 1.7% of the pool)" in text
    assert "hold 17.6% of the selection and 2 of them got at least one image" in text
    expected = (1 - (1 - 17 / 180) ** 2) + (1 - (1 - 17 / 180) ** 1)
    assert f"reach about {expected:.0f}." in text
    assert "rarer half of the labels (1 of 3) is 5.6% of the pool and 17.6% of the selection; 0 of them" in text
    assert _resolved("sample.strategy", "auto", data).startswith(" &rarr; typical")


def test_no_sentence_without_a_recorded_objective():
    top = LevelSizes(1, before=np.array([3, 1]), after=np.array([1, 1]))
    assert selection_sentence(ReportData(root="r", levels=[top])) == ""
