"""The search page in headless Chromium: landing gallery, upload and drop, click to query by id, filter dropdowns."""

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


def _all_thumbnails_decoded(page, grid: str, first: int = 8) -> None:
    """The first ``first`` thumbnails of ``grid`` were fetched by id and decoded (the rest load lazily)."""
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('{grid} img')).slice(0, {first}).every(i => i.complete && i.naturalWidth > 0)"
    )


def test_landing_gallery_pages_through_the_index(page, image_service, server_url):
    page.goto(server_url + "/")
    page.wait_for_selector("#gallery .hit >> nth=47")
    assert page.locator("#gallery .hit").count() == 48
    assert page.locator("#gallery .hit .id").nth(0).inner_text() == image_service.index.ids[0]
    assert page.inner_text("#page-info") == "images 1–48 of 60"
    _all_thumbnails_decoded(page, "#gallery")
    assert "cosine similarity" in page.inner_text("#score-help")
    page.click("#next")
    page.wait_for_function("document.querySelector('#page-info').textContent === 'images 49–60 of 60'")
    assert page.locator("#gallery .hit").count() == 12 and page.is_disabled("#next")


def test_filter_dropdown_lists_values_and_filters_gallery_and_search(page, server_url):
    page.goto(server_url + "/")
    page.wait_for_selector("#gallery .hit >> nth=47")
    options = page.locator("#filter-label option").all_inner_texts()
    assert options == ["any", "field", "forest", "river"]
    page.select_option("#filter-label", label="river")
    page.wait_for_function("document.querySelector('#page-info').textContent === 'images 1–20 of 20'")
    assert set(page.locator("#gallery .hit .meta").all_inner_texts()) == {"river"}
    # click a gallery image: the query is now that id, results filtered by the dropdown
    page.locator("#gallery .hit").nth(2).click()
    page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
    assert set(page.locator("#results .hit .meta").all_inner_texts()) == {"river"}
    assert "filters" in page.inner_text("#query-text") and '"river"' in page.inner_text("#query-text")
    page.select_option("#filter-label", label="any")


def test_upload_then_click_a_hit_queries_by_its_id_and_replaces_the_preview(page, image_service, tmp_path, server_url):
    page.goto(server_url + "/")
    page.wait_for_selector("#gallery .hit")
    query = tmp_path / "query.png"
    query.write_bytes(image_to_bytes(image_service.test_images[12]))
    page.fill("#k", "6")
    page.set_input_files("#file", str(query))
    page.wait_for_selector("#results .hit >> nth=5")
    hits = page.locator("#results .hit")
    assert hits.count() == 6 and page.locator("#gallery .hit").count() == 0
    assert hits.nth(0).locator(".id").inner_text() == "field/im012.png"
    assert "score 1.0000" in hits.nth(0).locator(".score").inner_text()
    assert page.inner_text("#query-text").startswith("Query: uploaded image query.png")
    assert page.get_attribute("#query-preview", "src").startswith("blob:")
    _all_thumbnails_decoded(page, "#results")

    # clicking a result searches by its id, and the query panel shows that image instead
    target = hits.nth(3).locator(".id").inner_text()
    hits.nth(3).click()
    page.wait_for_function(
        "(t) => document.querySelector('#query-text').textContent.includes(t) && "
        "document.querySelector('#status').textContent.includes('results in')",
        arg=target,
    )
    assert page.inner_text("#query-text") == f"Query: indexed image {target}"
    assert page.input_value("#query-id") == target
    assert page.get_attribute("#query-preview", "src") == f"images/{target}?size=192"
    assert page.locator("#results .hit .id").nth(0).inner_text() == target  # an id query finds itself first
    _all_thumbnails_decoded(page, "#query")


def test_drop_an_image_and_type_an_id(page, image_service, server_url):
    import base64

    page.goto(server_url + "/")
    page.wait_for_selector("#gallery .hit")
    png = base64.b64encode(image_to_bytes(image_service.test_images[30])).decode()
    page.evaluate(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        png,
    )
    page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
    assert page.inner_text("#query-text").startswith("Query: uploaded image dropped.png")
    assert page.locator("#results .hit .id").nth(0).inner_text() == image_service.index.ids[30]
    page.fill("#query-id", "forest/im007.png")
    page.press("#query-id", "Enter")
    page.wait_for_function("document.querySelector('#query-text').textContent.includes('forest/im007.png')")
    page.wait_for_function("document.querySelector('#status').textContent.includes('results in')")
    assert page.locator("#results .hit .id").nth(0).inner_text() == "forest/im007.png"


def test_bad_filter_shows_an_error(page, image_service, server_url):
    page.goto(server_url + "/")
    page.wait_for_selector("#gallery .hit")
    page.fill("#filters", '{"label": "lake"}')
    page.fill("#query-id", "forest/im007.png")
    page.click("#submit")
    page.wait_for_selector("#status.error")
    assert "unknown value 'lake' for filter column 'label'" in page.inner_text("#status")
    assert page.locator("#results .hit").count() == 0
