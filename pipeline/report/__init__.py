"""The run report: one static, self-contained ``report.html`` per run (opens offline).

``write_report(run, cfg)`` reads whatever the run directory holds (see :mod:`pipeline.report.data`)
and renders counts, stage timings, cluster-size distributions per level before/after balanced
sampling, a thumbnail gallery of the largest and smallest clusters, removed duplicates next to
the image kept in their place (kind, distance), label balance, active-learning
curves and the progress log tail. Options (``cfg["report"]``): ``gallery_clusters`` (3),
``thumbs_per_cluster`` (6), ``duplicate_pairs`` (12), ``thumb_size`` (112 px), ``progress_lines`` (30).
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
