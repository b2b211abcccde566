"""The Regions tab in a real browser: paint two strokes in two colours, type two prompts,
generate, see the result image (a tiny random model, so the test is fast and needs no weights)."""
import pytest

from browser_pages import open_page

pytestmark = pytest.mark.browser


@pytest.fixture
def page(atlas_app, browser):
    from app.tabs import regions as tab
    from backends.generative import regions as R

    R.register_pipeline("tiny", R.tiny_random_pipeline)
    for svc in tab.SERVICES:
        svc.model = "tiny"
    with open_page(browser, atlas_app[0], tab="Regions", ready="#regions-canvas canvas", height=1100) as p:
        yield p


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


def upload(page, path):
    with page.expect_file_chooser(timeout=30_000) as chooser:
        page.click("#regions-upload")
    chooser.value.set_files(str(path))


def test_upload_a_painted_layout_onto_the_canvas(page, tmp_path):
    import numpy as np
    from PIL import Image

    from backends.generative import regions as R

    size = 100  # not the canvas size: the upload is scaled to it
    layout = np.zeros((size, size, 4), np.uint8)  # transparent background (becomes white)
    layout[10:40, 10:40] = (*R.PALETTE["red"], 255)
    layout[60:90, 55:95] = (*R.PALETTE["blue"], 255)
    path = tmp_path / "layout.png"
    Image.fromarray(layout).save(path)
    upload(page, path)
    page.wait_for_function("(() => { const t = document.querySelector('#regions-notes').innerText;"
                           " return t.includes('red') && t.includes('blue'); })()", timeout=60_000)
    assert page.locator("#regions-preview img").count() == 1
    # the canvas itself now holds the layout (Generate reads the canvas, not the upload)
    page.wait_for_function("(() => { const c = document.querySelector('#regions-canvas canvas');"
                           " const w = c.width; const d = c.getContext('2d').getImageData(Math.round(w * 0.25),"
                           " Math.round(w * 0.25), 1, 1).data; return d[0] > 200 && d[2] < 120; })()", timeout=30_000)
    corner = page.evaluate("(() => { const c = document.querySelector('#regions-canvas canvas');"
                           " return Array.from(c.getContext('2d').getImageData(2, 2, 1, 1).data); })()")
    assert corner[:3] == [255, 255, 255]  # transparent → white (no region)

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    upload(page, bad)
    page.get_by_text("Upload not used").first.wait_for(timeout=30_000)
    still = page.evaluate("(() => { const c = document.querySelector('#regions-canvas canvas'); const w = c.width;"
                          " return Array.from(c.getContext('2d').getImageData(Math.round(w * 0.25),"
                          " Math.round(w * 0.25), 1, 1).data); })()")
    assert still[0] > 200 and still[2] < 120  # the canvas kept the layout


def test_the_object_planner_checkbox_decides_whether_areas_become_shapes(page, monkeypatch):
    """The Regions tab's "Object planner" box starts checked (the model's world has a planner): the
    notes then say which shape went into each area; unchecked, the areas are used as painted and
    the method note switches to the numbers measured without it."""
    from backends import plugins

    monkeypatch.setitem(plugins.REGION_PLANNERS._d, "tiny", plugins.get_region_planner("shapes"))
    box = page.get_by_label("Object planner: draw the shape each prompt names inside its area")
    assert box.is_checked()
    assert "with the object planner" in page.inner_text("#regions-method-note")
    page.click("#regions-example")
    page.wait_for_function("document.querySelector('#regions-notes').innerText.includes('blue')", timeout=30_000)
    page.click("#regions-generate")
    page.wait_for_function("document.querySelector('#regions-notes').innerText.includes('Time')", timeout=90_000)
    notes = page.inner_text("#regions-notes")
    assert "object planner" in notes and "a circle" in notes and "a star" in notes, notes
    box.uncheck()
    page.wait_for_function("!document.querySelector('#regions-method-note').innerText.includes('object planner')",
                           timeout=30_000)
    page.click("#regions-generate")
    page.wait_for_function("(() => { const t = document.querySelector('#regions-notes').innerText;"
                           " return t.includes('Time') && !t.includes('object planner'); })()", timeout=90_000)
