"""The labeler's progress bar carries `strata active`'s estimates of the exported set (issue 30)."""

from __future__ import annotations

from pipeline.active.run import recall_line
from pipeline.labeler import LabelClient, LabelStore, serve


def test_progress_api_carries_the_exported_set_estimates(store: LabelStore) -> None:
    record = {
        "exported_recall_est": 0.962,
        "exported_recall_lo": 0.71,
        "exported_recall_hi": 1.0,
        "model_precision_est": 0.981,
        "model_precision_lo": 0.9,
        "model_precision_hi": 1.0,
        "labeled_recall_est": 0.45,
    }
    line = recall_line(record, 0.95, 0.9)
    assert line == (
        "exported recall ≈0.96 [0.71, 1.00] · model precision ≈0.98 [0.90, 1.00] · labeled by you ≈0.45 "
        "(stop at recall 0.95, precision 0.90)"
    )
    # a model that calls nothing has no precision yet: the bar says so instead of a number
    none_called = {**record, "model_precision_est": None}
    assert "model precision - ·" in recall_line(none_called, 0.95)
    store.set_status(line)
    with serve(store.path, settings=None, port=0) as server, LabelClient(server.url, "alice") as alice:
        assert alice.progress()["status"] == line  # what app.js appends to "N / M labeled"
