"""One screenshot of each tab, taken in a real browser (Playwright driving Debian's Chromium) once
the tab's main content has rendered. The README shows them: to refresh them, run

    LATENT_ATLAS_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest -q tests/test_screenshots_browser.py

Without LATENT_ATLAS_SCREENSHOTS the files go to pytest's tmp_path. Each one has to be a PNG of the
viewport with more than a few colours (not a blank page or a lone spinner)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backends.shapes.generator import WEIGHTS
from browser_pages import ANNOTATE_POINT_PIXELS, open_page

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not WEIGHTS.exists(), reason="no Shapes generator weights in assets/ yet")]

WIDTH, HEIGHT = 1400, 1000
MIN_COLOURS = 64
TIMEOUT = 180_000  # per wait; under heavy load (load average 9 on 2 cores) 120 s was once too short
TASK_SET, ANNOTATOR, TOKEN = "screenshots", "reader", "token-screenshots"




def _images_loaded(selector: str, n: int = 1, min_width: int = 16) -> str:
    return (f"(() => {{ const im = [...document.querySelectorAll('{selector}')];"
            f" return im.length >= {n} && im.every(i => i.complete && i.naturalWidth >= {min_width}); }})()")


def _map_drawn(selector: str) -> str:
    return f"{selector} .la-scatter[data-ready]"


def atlas(page):
    page.wait_for_selector(_map_drawn("#atlas-map"), state="visible", timeout=TIMEOUT)
    # click a point: its neighbours fill the gallery beside the map
    x, y = page.evaluate("""() => { const d = document.querySelector('#atlas-map .la-plot'); const fl = d._fullLayout;
      const tr = d._fullData[0]; const r = d.querySelector('.nsewdrag').getBoundingClientRect();
      return [r.left + fl.xaxis.l2p(tr.x[0]), r.top + fl.yaxis.l2p(tr.y[0])]; }""")
    page.mouse.click(x, y)
    page.wait_for_function(_images_loaded("#atlas-neighbours img", 10), timeout=TIMEOUT)


def generate(page):
    page.wait_for_function(_images_loaded("#gen-image img", 1, 32), timeout=TIMEOUT)  # the example prompt's image


def directions(page):
    page.click("#dir-generate")
    page.wait_for_function(_images_loaded("#dir-image img", 1, 32), timeout=TIMEOUT)
    page.wait_for_function(_images_loaded("#dir-source img", 1, 32), timeout=TIMEOUT)


def regions(page):
    page.click("#regions-example")
    page.wait_for_function(_images_loaded("#regions-preview img"), timeout=TIMEOUT)
    page.click("#regions-generate")
    page.wait_for_function(_images_loaded("#regions-result img", 1, 64), timeout=TIMEOUT)


def stitching(page):
    page.click("#st-compare")
    for side in ("#st-map-a", "#st-map-b"):
        page.wait_for_selector(_map_drawn(side), state="visible", timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#st-metrics').innerText.includes('Jaccard')", timeout=TIMEOUT)


def clusters(page):
    page.click("#clusters-run")  # k = 0: estimated, and the curve it was chosen from is drawn
    page.wait_for_selector(_map_drawn("#clusters-map"), state="visible", timeout=TIMEOUT)
    page.wait_for_function("(() => { const d = document.querySelector('#clusters-curve .js-plotly-plot');"
                           " return d && d.data && d.data.some(t => t.x && t.x.length > 1); })()", timeout=TIMEOUT)
    page.wait_for_function(_images_loaded("#clusters-gallery img", 4), timeout=TIMEOUT)


def annotate(page):
    page.fill("#ann-name input, #ann-name textarea", ANNOTATOR)
    page.fill("#ann-token input, #ann-token textarea", TOKEN)
    box = page.locator("#ann-task-set input")
    box.fill(TASK_SET)
    box.press("Enter")
    page.click("#ann-sign-in")
    page.wait_for_selector(_map_drawn("#ann-plot"), state="visible", timeout=TIMEOUT)
    # box the group of points around the leftmost one: they turn to the "cluster 1" colour
    page.locator("#ann-tool").get_by_label("box").check()
    page.wait_for_function("document.querySelector('#ann-plot .la-plot')._fullLayout.dragmode === 'select'",
                           timeout=TIMEOUT)
    pts = page.evaluate(ANNOTATE_POINT_PIXELS)
    width = page.locator("#ann-plot .la-plot").bounding_box()["width"]
    first = min(pts, key=lambda p: p["px"])
    group = [p for p in pts if abs(p["px"] - first["px"]) + abs(p["py"] - first["py"]) < width / 4]
    x0, x1 = min(p["px"] for p in group) - 10, max(p["px"] for p in group) + 10
    y0, y1 = min(p["py"] for p in group) - 10, max(p["py"] for p in group) + 10
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#ann-summary').innerText.includes('cluster 1')", timeout=TIMEOUT)


TABS = {"Atlas": atlas, "Generate": generate, "Directions": directions, "Regions": regions,
        "Stitching": stitching, "Clusters": clusters, "Annotate": annotate}


@pytest.fixture
def shots_dir(tmp_path) -> Path:
    d = Path(os.environ.get("LATENT_ATLAS_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def shapes_regions():
    """The Regions tab on the shipped Shapes model (another browser test may have put a tiny random
    one in its place in this process)."""
    from app.tabs import regions as tab

    before = [svc.model for svc in tab.SERVICES]
    for svc in tab.SERVICES:
        svc.model = os.environ.get("LATENT_ATLAS_REGIONS_MODEL", "shapes")
    yield
    for svc, model in zip(tab.SERVICES, before):
        svc.model = model


def distinct_colours(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG", im.format
        assert im.size == (WIDTH, HEIGHT), im.size
        colours = im.convert("RGB").getcolors(maxcolors=WIDTH * HEIGHT)
    return len(colours)


def test_a_screenshot_of_each_tab(atlas_app, browser, shots_dir, shapes_regions):
    from app.tabs.annotate import store_for
    from backends.clusters.annotations import AuthError
    from backends.clusters.perception import synthetic_task_specs

    url, backends = atlas_app
    store = store_for(backends)
    if TASK_SET not in [s["name"] for s in store.task_sets()]:
        store.create_task_set(TASK_SET, synthetic_task_specs(3, seed=3, points=(150, 200), clusters=(3, 4),
                                                               separation=(6.0, 8.0)), kind="synthetic")
    try:  # the admin hands out a token (sign-up is closed by default)
        store.register_annotator(ANNOTATOR, TOKEN)
    except AuthError:  # already registered in this cache
        pass
    with open_page(browser, url, width=WIDTH, height=HEIGHT, final_map=True) as page:
        for tab, show in TABS.items():
            page.get_by_role("tab", name=tab).click()
            show(page)
            page.evaluate("window.scrollTo(0, 0)")
            page.mouse.move(1, 1)  # no hover tooltip or plot toolbar in the picture
            time.sleep(1.0)  # transitions and plot redraws settle
            path = shots_dir / f"{tab.lower()}.png"
            page.screenshot(path=str(path))
    for tab in TABS:
        path = shots_dir / f"{tab.lower()}.png"
        assert path.exists(), path
        assert distinct_colours(path) > MIN_COLOURS, (tab, distinct_colours(path))
