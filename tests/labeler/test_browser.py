"""The labeling page in real headless Chromium (Playwright): keys, undo, a touch swipe, two labelers,
the prompt and reference, hidden ids, grid pages (flip, confirm, page undo)."""

from __future__ import annotations

import pytest

from pipeline.labeler import LabelerSettings, LabelStore, serve

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture
def browser(chromium: str):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_labeler(browser, url: str, name: str, wait_for: str = "document.body.dataset.current", **context_args):
    """A new browser context (its own storage: a separate labeler) signed in as ``name``.

    ``bypass_csp`` lets Playwright evaluate its wait predicates; the page itself needs no eval.
    """
    context = browser.new_context(viewport={"width": 900, "height": 800}, bypass_csp=True, **context_args)
    page = context.new_page()
    page.goto(url)
    page.fill("#name-input", name)
    page.click("#name-form button[type=submit]")
    page.wait_for_function(f"({wait_for} || '').length > 0")
    if wait_for == "document.body.dataset.current":
        page.wait_for_function(
            "document.getElementById('image').complete && document.getElementById('image').naturalWidth > 0"
        )
    return context, page


def shown(page) -> str:
    """The id on screen (kept in the DOM for tests; ``#item-id`` shows it only with show_ids)."""
    return page.evaluate("document.body.dataset.current")


def wait_labeled(page, n: int) -> None:
    page.wait_for_function(f"document.getElementById('progress').dataset.labeled === '{n}'")


def next_shown(page, previous: str) -> str:
    page.wait_for_function(f"document.body.dataset.current !== {previous!r}")
    return shown(page)


def test_keys_label_and_undo_restores(browser, store: LabelStore):
    with serve(store.path, port=0) as server:
        _, page = open_labeler(browser, server.url, "alice")
        first = shown(page)
        page.keyboard.press("ArrowRight")
        second = next_shown(page, first)
        wait_labeled(page, 1)
        page.keyboard.press("ArrowLeft")
        third = next_shown(page, second)
        wait_labeled(page, 2)
        assert store.current_labels() == {first: "positive", second: "negative"}
        assert page.text_content("#progress").startswith("2 / 60")

        page.keyboard.press("Backspace")  # undo brings the last image back
        page.wait_for_function(f"document.body.dataset.current === {second!r}")
        wait_labeled(page, 1)
        assert store.current_labels() == {first: "positive"}
        page.keyboard.press("ArrowDown")
        assert next_shown(page, second) == third  # the image that was next is shown again
        wait_labeled(page, 2)
        page.click("#btn-undo")
        page.wait_for_function(f"document.body.dataset.current === {second!r}")
        page.click("#btn-positive")
        wait_labeled(page, 2)
        assert store.current_labels() == {first: "positive", second: "positive"}
        assert {e.annotator for e in store.events()} == {"alice"}


def test_touch_swipe_labels(browser, store: LabelStore):
    with serve(store.path, port=0) as server:
        context, page = open_labeler(browser, server.url, "bob", has_touch=True, is_mobile=True)
        cdp = context.new_cdp_session(page)
        box = page.locator("#card").bounding_box()
        x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

        def swipe(dx: float, dy: float) -> None:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
            for k in range(1, 9):
                point = {"x": x0 + dx * k / 8, "y": y0 + dy * k / 8}
                cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

        expected = {}
        for dx, dy, label in [(250, 10, "positive"), (-250, -5, "negative"), (5, 220, "unsure")]:
            item = shown(page)
            swipe(dx, dy)
            next_shown(page, item)
            expected[item] = label
            wait_labeled(page, len(expected))
        item = shown(page)
        swipe(20, 15)  # too short: the card snaps back and nothing is labeled
        page.wait_for_function(
            "(c => !c.classList.contains('dragging') && c.style.transform === '')(document.getElementById('card'))"
        )
        assert shown(page) == item
        # a full swipe after it labels this same item and nothing else: had the short swipe sent a
        # label, it would have gone first (to this item) and the full swipe to the next one
        swipe(250, 10)
        next_shown(page, item)
        wait_labeled(page, len(expected) + 1)
        assert store.current_labels() == {**expected, item: "positive"}
        assert {e.annotator for e in store.events()} == {"bob"}


def test_two_labelers_never_get_the_same_image(browser, store: LabelStore):
    with serve(store.path, port=0) as server:
        _, alice = open_labeler(browser, server.url, "alice")
        _, bob = open_labeler(browser, server.url, "bob")
        seen = {"alice": [shown(alice)], "bob": [shown(bob)]}
        for k in range(1, 7):
            for name, page in (("alice", alice), ("bob", bob)):
                page.keyboard.press("ArrowRight" if k % 2 else "ArrowLeft")
                seen[name].append(next_shown(page, seen[name][-1]))
        assert len(set(seen["alice"])) == len(seen["alice"]) == 7
        assert not set(seen["alice"]) & set(seen["bob"])
        bob.wait_for_function("document.getElementById('progress').dataset.labeled === '12'")
        events = store.events()
        assert len(events) == 12 and len({e.id for e in events}) == 12
        assert {e.id for e in events if e.annotator == "alice"} == set(seen["alice"][:6])


def test_number_keys_label_a_multiclass_store(browser, tmp_path, image_files):
    """With more than positive/negative, the page binds 1..n to the store's labels in order."""
    ids, uris = image_files
    multi = LabelStore(tmp_path / "multi.sqlite", labels=["forest", "river", "beach", "unsure"])
    multi.register(ids, uris)
    multi.enqueue(ids, batch="b0")
    with serve(multi.path, port=0) as server:
        _, page = open_labeler(browser, server.url, "carol")
        expected = {}
        for key, label in (("3", "beach"), ("1", "forest"), ("4", "unsure"), ("2", "river")):
            item = shown(page)
            page.keyboard.press(key)
            next_shown(page, item)
            expected[item] = label
            wait_labeled(page, len(expected))
        assert multi.current_labels() == expected
        item = shown(page)
        page.keyboard.press("ArrowRight")  # no "positive" label in this store: the key does nothing
        page.keyboard.press("1")  # ... which the following number key proves: it labels this same item
        next_shown(page, item)
        wait_labeled(page, len(expected) + 1)
        assert multi.current_labels() == {**expected, item: "forest"}


def test_prompt_reference_shown_ids_hidden_and_no_empty_message_under_the_name_form(browser, tmp_path, image_files):
    ids, uris = image_files
    empty = LabelStore(tmp_path / "empty.sqlite")
    empty.register(ids, uris)  # nothing queued yet
    settings = LabelerSettings(prompt="Is this like the reference?", reference=ids[0])
    with serve(empty.path, settings=settings, port=0) as server:
        context = browser.new_context(viewport={"width": 900, "height": 800}, bypass_csp=True)
        page = context.new_page()
        page.goto(server.url)
        page.wait_for_selector("#name-input", state="visible")
        assert not page.is_visible("#empty")  # the empty-queue message does not show through the name prompt
        page.fill("#name-input", "dana")
        page.click("#name-form button[type=submit]")
        page.wait_for_selector("#empty", state="visible")
        assert page.text_content("#prompt") == "Is this like the reference?" and page.is_visible("#prompt")
        page.wait_for_function("(i => i.complete && i.naturalWidth > 0)(document.getElementById('reference-image'))")
        assert page.is_visible("#reference")
        empty.enqueue(ids[1:4])  # queued later: shown by the page's polling
        page.wait_for_function("(document.body.dataset.current || '').length > 0", timeout=15000)
        assert shown(page) == ids[1]
        assert not page.is_visible("#item-id") and ids[1] not in page.inner_text("body")  # ids hidden by default
    empty.enqueue(ids[4:8])  # dana still holds ids 1-3
    with serve(empty.path, settings=LabelerSettings(show_ids=True), port=0) as server:
        _, page = open_labeler(browser, server.url, "erin")
        assert page.is_visible("#item-id") and page.text_content("#item-id") == shown(page)
        assert not page.is_visible("#prompt") and not page.is_visible("#reference")


def test_grid_page_flip_confirm_and_undo(browser, store: LabelStore, image_files):
    ids, _ = image_files
    store.set_guesses({ids[2]: "negative"})
    with serve(store.path, settings=LabelerSettings(mode="grid", grid_size=6), port=0) as server:
        _, page = open_labeler(browser, server.url, "frank", wait_for="document.body.dataset.page")
        first = page.evaluate("document.body.dataset.page").split("\n")
        assert first == ids[:6] and page.locator(".tile").count() == 6
        marks = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.label)")
        assert marks == ["positive", "positive", "negative", "positive", "positive", "positive"]
        assert ids[0] not in page.inner_text("body")  # no ids on tiles by default
        page.locator(".tile").nth(1).click()  # click flips positive -> negative
        for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowRight", " "):  # focus tile 5 (from tile 2), flip
            page.keyboard.press(key)
        page.keyboard.press("Enter")
        wait_labeled(page, 6)
        expected = {i: "positive" for i in ids[:6]} | {ids[1]: "negative", ids[2]: "negative", ids[5]: "negative"}
        assert store.current_labels() == expected
        page.wait_for_function(f"document.body.dataset.page.split('\\n')[0] === {ids[6]!r}")
        assert page.evaluate("document.body.dataset.page").split("\n") == ids[6:12]

        page.keyboard.press("Backspace")  # undo: the whole first page comes back, marked as it was sent
        page.wait_for_function(f"document.body.dataset.page.split('\\n')[0] === {ids[0]!r}")
        wait_labeled(page, 0)
        assert store.current_labels() == {}
        marks = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.label)")
        assert dict(zip(ids[:6], marks)) == expected
        page.click("#btn-all-negative")
        page.click("#btn-confirm")
        wait_labeled(page, 6)
        assert store.current_labels() == dict.fromkeys(ids[:6], "negative")
        events = store.events()
        assert len(events) == 18 and sum(e.undone for e in events) == 6 and {e.annotator for e in events} == {"frank"}
        assert len({e.page for e in events}) == 2
