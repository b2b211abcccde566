"""The Regions tab in a real browser: paint two strokes in two colours, type two prompts,
generate, see the result image (a tiny random model, so the test is fast and needs no weights)."""
import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(atlas_app, browser):
    from app.tabs import regions as tab
    from backends import regions as R

    R.register_pipeline("tiny", R.tiny_random_pipeline)
    for svc in tab.SERVICES:
        svc.model = "tiny"
    url, _ = atlas_app
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    p = ctx.new_page()
    p.goto(url)
    p.get_by_role("tab", name="Regions").click()
    p.wait_for_selector("#regions-canvas canvas", state="visible", timeout=60_000)
    yield p
    ctx.close()


def stroke(page, x0, y0, x1, y1):
    box = page.locator("#regions-canvas canvas").bounding_box()
    page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + x1 * box["width"], box["y"] + y1 * box["height"], steps=8)
    page.mouse.up()


def test_paint_two_regions_prompt_and_generate(page):
    stroke(page, 0.15, 0.2, 0.4, 0.25)  # the first palette colour (red) is selected
    page.wait_for_function("document.querySelector('#regions-notes').innerText.includes('red')", timeout=30_000)
    page.click("#regions-canvas button[aria-label=blue]")
    stroke(page, 0.55, 0.7, 0.85, 0.75)
    page.wait_for_function("document.querySelector('#regions-notes').innerText.includes('blue')", timeout=30_000)
    assert page.locator("#regions-preview img").count() == 1  # the parsed masks are shown
    page.fill("#regions-prompt-red textarea, #regions-prompt-red input", "a red circle")
    page.fill("#regions-prompt-blue textarea, #regions-prompt-blue input", "a blue star")
    page.fill("#regions-global textarea, #regions-global input", "on a black background")
    page.get_by_label("Compare all (same seed)").check()
    page.click("#regions-generate")
    page.wait_for_function("document.querySelectorAll('#regions-result img').length >= 3", timeout=90_000)
    notes = page.inner_text("#regions-notes")
    assert "red" in notes and "blue" in notes and "MultiDiffusion" in notes and "Time" in notes
    page.wait_for_function("[...document.querySelectorAll('#regions-result img')].every("
                           "i => i.complete && i.naturalWidth >= 64 && i.naturalWidth === i.naturalHeight)",
                           timeout=30_000)


def test_missing_prompt_is_a_clear_message(page):
    stroke(page, 0.2, 0.5, 0.6, 0.5)
    page.wait_for_function("document.querySelector('#regions-notes').innerText.includes('red')", timeout=30_000)
    page.click("#regions-generate")
    page.get_by_text("region 'red' has no prompt").first.wait_for(timeout=30_000)
