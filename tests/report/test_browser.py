"""The report renders offline in headless Chromium: no network request, every thumbnail decodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.report import write_report
from pipeline.report.data import gather
from pipeline.rundir import RunDir

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def render_in_chromium(chromium: str, report: Path, screenshot: Path | None = None, width: int = 1180) -> dict:
    """Open ``report`` from disk with every non-file request blocked; return what the page shows."""
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": 900}, offline=True)
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            info = page.evaluate(
                """() => ({
                    title: document.title,
                    sections: [...document.querySelectorAll('section')].map(s => s.id),
                    images: [...document.images].map(i => [i.complete, i.naturalWidth]),
                    svgs: [...document.querySelectorAll('svg')].map(s => s.getBoundingClientRect().width),
                    cards: Object.fromEntries([...document.querySelectorAll('.card')].map(c => [c.id, c.querySelector('b').textContent])),
                    details: [...document.querySelectorAll('#gallery details')].map(d => d.open),
                    // a caption shows its whole id: nothing clipped, no ellipsis
                    captions: [...document.querySelectorAll('details[open] figcaption')].map(f => [
                        f.textContent, f.scrollWidth <= f.clientWidth + 1 && f.scrollHeight <= f.clientHeight + 1,
                        getComputedStyle(f).textOverflow]),
                    why: [...document.querySelectorAll('#labels p.why')].map(p => p.textContent),
                })"""
            )
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    info["requests"] = [u for u in requests if not u.startswith(("file:", "data:"))]
    info["errors"] = errors
    return info


def test_report_renders_offline_in_chromium(chromium, finished_run: RunDir, tmp_path):
    report = Path(write_report(finished_run, {"report": {"thumbs_per_cluster": 6}}))
    shot = tmp_path / "report.png"
    info = render_in_chromium(chromium, report, shot)
    assert info["requests"] == [] and info["errors"] == []
    assert info["title"].startswith("Strata run report")
    assert {"counts", "timings", "clusters", "gallery", "labels"} <= set(info["sections"])
    assert info["images"] and all(done and w > 0 for done, w in info["images"])
    assert len(info["svgs"]) >= 4 and all(w > 100 for w in info["svgs"])
    assert info["cards"]["count-rejected"] == "3" and info["cards"]["count-selected"] == "24"
    # every cluster is listed and collapsible; the first three are open, their captions whole
    n_clusters = int((gather(finished_run, {}).levels[0].before > 0).sum())
    assert len(info["details"]) == n_clusters and info["details"][:3] == [True] * min(3, n_clusters)
    assert not any(info["details"][3:])
    assert info["captions"] and all(fits and overflow != "ellipsis" for _, fits, overflow in info["captions"])
    assert any(text.startswith("Label entropy") and "level-1 clusters" in text for text in info["why"])
    assert shot.stat().st_size > 20_000
