"""The run report: one static, self-contained ``report.html`` per run (opens offline).

``write_report(run, cfg)`` reads whatever the run directory holds (see :mod:`pipeline.report.data`)
and renders counts, stage timings, cluster-size distributions per level before/after balanced
sampling, every level-1 cluster as a collapsible thumbnail gallery (largest first, with its
selected count and most frequent label), removed duplicates next to the image kept in their place
(kind, distance), balance before/after (cluster sizes and labels, each with a sentence computed
from the data on what changed and why), the chosen k per level, active-learning curves and the
progress log tail. Options (``cfg["report"]``): ``thumbs_per_cluster`` (24), ``max_thumbs`` (1200,
water-filled over the clusters), ``max_clusters`` (500), ``duplicate_pairs`` (12), ``thumb_size``
(96 px), ``progress_lines`` (30).
"""

from __future__ import annotations

import fsspec

from pipeline.artifacts import REPORT
from pipeline.report.data import ReportData, gather
from pipeline.report.html import render
from pipeline.rundir import RunDir


def write_report(run: RunDir, cfg: dict | None = None) -> str:
    """Render ``run``'s report and write it atomically to ``run.path(REPORT)``; returns that path."""
    html = render(gather(run, cfg))
    with run.staging(REPORT) as tmp:  # a crash mid-write never leaves a half report
        with fsspec.open(tmp, "w", encoding="utf-8") as fh:
            fh.write(html)
    return run.path(REPORT)


__all__ = ["ReportData", "gather", "render", "write_report"]
