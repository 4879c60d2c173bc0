"""The search page in headless Chromium: upload an image, see the grid of results, click to re-query."""

from __future__ import annotations

import shutil

import pytest

from pipeline.search.service import image_to_bytes

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def page(server_url):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.set_default_timeout(60_000)
        page.goto(server_url + "/")
        yield page
        browser.close()


def test_upload_shows_result_grid_with_thumbnails(page, image_service, tmp_path):
    query = tmp_path / "query.png"
    query.write_bytes(image_to_bytes(image_service.test_images[12]))
    page.fill("#k", "6")
    page.set_input_files("#file", str(query))
    page.click("#submit")
    page.wait_for_selector("#results .hit >> nth=5")
    hits = page.locator("#results .hit")
    assert hits.count() == 6
    assert hits.nth(0).locator(".id").inner_text() == "field/im012.png"
    assert "score 1.0000" in hits.nth(0).locator(".score").inner_text()
    assert "results in" in page.inner_text("#status")
    # thumbnails were fetched by id and decoded by the browser
    page.wait_for_function(
        "Array.from(document.querySelectorAll('#results img')).every(i => i.complete && i.naturalWidth > 0)"
    )

    # clicking a result searches by its id; a filter limits the label
    page.fill("#filters", '{"label": "river"}')
    hits.nth(3).click()
    page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
    labels = page.locator("#results .hit .meta").all_inner_texts()
    assert len(labels) == 6 and set(labels) == {"river"}


def test_bad_filter_shows_an_error(page, image_service, tmp_path):
    query = tmp_path / "q.png"
    query.write_bytes(image_to_bytes(image_service.test_images[3]))
    page.fill("#filters", '{"nope": 1}')
    page.set_input_files("#file", str(query))
    page.click("#submit")
    page.wait_for_selector("#status.error")
    assert "unknown filter column" in page.inner_text("#status")
    assert page.locator("#results .hit").count() == 0
