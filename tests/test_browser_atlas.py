"""The Atlas in a real browser (Playwright driving Debian's Chromium)."""
import time

import pytest

from browser_pages import lasso_everything, open_page

pytestmark = pytest.mark.browser

POINT_POSITION = """(i) => { const d = document.querySelector('#atlas-map .la-plot'); const fl = d._fullLayout;
  const tr = d._fullData[0]; const r = d.querySelector('.nsewdrag').getBoundingClientRect();
  return [r.left + fl.xaxis.l2p(tr.x[i]), r.top + fl.yaxis.l2p(tr.y[i])]; }"""


@pytest.fixture
def page(atlas_app, browser):
    with open_page(browser, atlas_app[0], ready="#atlas-map .la-scatter[data-ready]", timeout=180_000, final_map=True) as p:
        yield p


def test_map_shows_every_digit_and_click_fills_neighbour_gallery(page):
    assert page.get_attribute("#atlas-map .la-scatter", "data-points") == "1797"
    x, y = page.evaluate(POINT_POSITION, 0)
    page.mouse.move(x, y)
    page.wait_for_selector("#atlas-map .la-tip img", state="visible", timeout=10_000)  # hover thumbnail
    page.mouse.click(x, y)
    page.wait_for_selector("#atlas-neighbours img", timeout=60_000)
    time.sleep(0.5)
    assert page.locator("#atlas-neighbours img").count() >= 10
    # the thumbnails fit the column (at 5 columns of Gradio's 100-px minimum they ran off its edge)
    w = page.evaluate("() => { const g = document.querySelector('#atlas-neighbours .grid-wrap'); "
                      "return [g.scrollWidth, g.clientWidth]; }")
    assert w[0] <= w[1], w
    clicked = page.input_value("#atlas-item-id textarea")
    assert clicked.startswith("digit-")
    table = page.inner_text("#atlas-neighbours-table")
    assert "distance" in table
    # the clicked item and its neighbours are ringed on the map (a small patch, not a new figure)
    page.wait_for_function("document.querySelector('#atlas-map .la-plot').data.some("
                           "t => t.name === 'highlight' && t.x.length === 11)", timeout=30_000)


def test_lasso_selection_lists_the_selected_items(page):
    lasso_everything(page)
    text = page.inner_text("#atlas-selection")
    count = int(text.split()[0].replace(",", ""))
    assert count > 1000, text  # a lasso around the whole plot area takes most points


def test_a_bad_search_is_reported_once_in_a_toast(page):
    """An invalid regular expression: the toast names it; no "Error" badge covers the map or the tables."""
    page.fill("#atlas-query textarea", "(")
    page.get_by_text("regular expression").click()
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_selector("text=not a valid regular expression", timeout=30_000)
    time.sleep(0.5)
    count = "(sel) => Array.from(document.querySelectorAll(sel)).filter(e => e.offsetParent !== null).length"
    assert page.evaluate(count, ".toast-title-row span.error") >= 1  # the toast
    assert page.evaluate(count, ".wrap > span.error") == 0  # no badge over the map or the selection


SR_RECORDER = """() => { window.__sr = []; const seen = (t) => { t = (t || '').trim(); if (t) window.__sr.push(t); };
  new MutationObserver(ms => ms.forEach(m => seen(m.target.textContent || (m.target.parentElement || {}).textContent)))
    .observe(document.body, {subtree: true, childList: true, characterData: true});
  window.__srPoll = setInterval(() => document.querySelectorAll('.sr-only').forEach(e => seen(e.textContent)), 50); }"""


def test_screen_readers_hear_words_not_translation_keys(page):
    """When an event ends, Gradio announces it in a screen-reader-only region; in 6.31 that was the raw
    key "common.complete". The app gives the key its text."""
    page.evaluate(SR_RECORDER)
    page.fill("#atlas-query textarea", "label=3")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('match')", timeout=60_000)
    page.wait_for_function("() => window.__sr.some(t => t.includes('Complete'))", timeout=15_000)
    said = page.evaluate("() => window.__sr")
    assert not [t for t in said if "common." in t], said


def test_a_first_visitor_on_a_fresh_cache_sees_a_pca_map_then_umap_keeping_the_search(browser, tmp_path,
                                                                                         monkeypatch):
    """A server with an empty cache: the page shows a PCA map at once, titled as such, usable while
    UMAP runs (a search on it works); UMAP then replaces it and the search's hits stay selected.
    UMAP is held until the search is done, so a slow page load cannot miss the preview."""
    import threading

    from app.main import APP_CSS, create_app
    from backends.corpora import projection
    from backends.registry import Backends
    from backends.settings import Settings
    from conftest import free_port

    searched = threading.Event()
    real_umap = projection.umap_from_knn

    def held_umap(*args, **kwargs):
        searched.wait(timeout=240)
        return real_umap(*args, **kwargs)

    monkeypatch.setattr(projection, "umap_from_knn", held_umap)
    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"), port=free_port())
    demo = create_app(settings, Backends(settings))
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True, css=APP_CSS)
    title = "() => (document.querySelector('#atlas-map .gtitle') || {}).textContent || ''"
    try:
        with open_page(browser, f"http://127.0.0.1:{settings.port}/", ready="#atlas-map .la-scatter[data-ready]",
                       timeout=180_000) as page:
            assert "PCA for now" in page.evaluate(title)  # drawn without waiting for UMAP
            assert "The map is PCA for now" in page.inner_text("#atlas-info")
            page.fill("#atlas-query textarea", "label=3")
            page.get_by_role("button", name="Search", exact=True).click()
            page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('183 items match')",
                                   timeout=60_000)
            assert "PCA for now" in page.evaluate(title)
            searched.set()  # UMAP may finish now
            page.wait_for_function(f"({title})().includes('UMAP (n_neighbors=15')", timeout=300_000)
            page.wait_for_function("!document.querySelector('#atlas-info').innerText.includes('PCA for now')",
                                   timeout=30_000)
            assert "digit-0003" in page.inner_text("#atlas-selection-table")  # the first hit, still listed
            page.wait_for_function("document.querySelector('#atlas-map .la-plot').data.some("
                                   "t => t.name === 'selected' && t.x.length === 183)", timeout=30_000)
    finally:
        searched.set()
        demo.close()
