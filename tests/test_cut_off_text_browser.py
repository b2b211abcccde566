"""Captions, menus and tables show their whole text (issue #19 item 8), in Chromium at 1400×1000.

Gradio draws a gallery caption over its thumbnail on one line ending in "…" ('shapes-0-…',
'0: a pink c…', 'MultiDiffusi…'), clips a dropdown's value at its box ('PC 1 (conditional h)
[cond-'), and lets a gallery's 100-px columns run past their panel. app/main.py's APP_CSS puts
captions under their image and wraps them, sizes a dropdown in a row to its value, shrinks gallery
columns to the panel and keeps tables inside theirs (they scroll sideways). Each test fills a tab's
galleries, menus and tables, then checks every visible one:

  caption:  no text cut off sideways or downwards (scrollWidth <= clientWidth + 1, same for
            heights), no ellipsis hiding text, and the caption inside its thumbnail;
  dropdown: the chosen value and each option fit their box;
  gallery:  its grid no wider than the gallery;
  table:    the dataframe's box inside its column; wider content scrolls inside it.

LATENT_ATLAS_SCREENSHOTS=<folder> keeps a screenshot of each tab there (default: pytest's tmp_path).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from browser_pages import lasso_everything, open_page
from test_browser_atlas import POINT_POSITION

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1400, 1000
TIMEOUT = 180_000

VISIBLE = "const visible = e => e.offsetParent !== null && e.getClientRects().length > 0;"

CAPTIONS = VISIBLE + """
  return [...document.querySelectorAll('.gallery-container .caption-label, .gallery-container .caption')].filter(visible)
    .map(e => { const cs = getComputedStyle(e), r = e.getBoundingClientRect();
      const tile = (e.closest('.thumbnail-item, .preview') || e).getBoundingClientRect();
      return {text: e.innerText, sw: e.scrollWidth, cw: e.clientWidth, sh: e.scrollHeight, ch: e.clientHeight,
              ellipsis: cs.textOverflow === 'ellipsis' && cs.whiteSpace === 'nowrap',
              inside: r.left >= tile.left - 1 && r.right <= tile.right + 1 && r.top >= tile.top - 1
                      && r.bottom <= tile.bottom + 1}; });"""

DROPDOWNS = VISIBLE + """
  return [...document.querySelectorAll('input[role=combobox]')].filter(e => visible(e) && e.value)
    .map(e => ({id: (e.closest('.block') || e).id, text: e.value, sw: e.scrollWidth, cw: e.clientWidth}));"""

OPTIONS = VISIBLE + """
  return [...document.querySelectorAll('[role=listbox] [role=option]')].filter(visible)
    .map(e => { const u = e.closest('[role=listbox]').getBoundingClientRect();
      return {text: e.innerText, sw: e.scrollWidth, cw: e.clientWidth, right: u.right, width: window.innerWidth}; });"""

GALLERIES = VISIBLE + """
  return [...document.querySelectorAll('.gallery-container .grid-wrap')].filter(visible)
    .map(g => ({id: g.closest('.block').id, sw: g.scrollWidth, cw: g.clientWidth}));"""

TABLES = VISIBLE + """
  return [...document.querySelectorAll('.table-container')].filter(visible).map(t => {
    const block = t.closest('.block'), col = block.parentElement.closest('.column, .tabitem');
    const b = block.getBoundingClientRect(), c = col.getBoundingClientRect();
    const v = t.querySelector('.virtual-table-viewport');
    return {id: block.id || t.innerText.split('\\n')[0], block: [b.left, b.right], column: [c.left, c.right],
            wide: v.scrollWidth > v.clientWidth + 1, overflow_x: getComputedStyle(v).overflowX}; });"""


def js(body: str) -> str:
    return "() => { " + body + " }"


def check_captions(page, at_least: int) -> list[dict]:
    caps = page.evaluate(js(CAPTIONS))
    assert len(caps) >= at_least, caps
    for c in caps:
        assert c["sw"] <= c["cw"] + 1, f"caption {c['text']!r} cut off sideways: {c}"
        assert c["sh"] <= c["ch"] + 1, f"caption {c['text']!r} cut off at the bottom: {c}"
        assert not (c["ellipsis"] and c["sw"] > c["cw"]), f"caption {c['text']!r} ends in an ellipsis: {c}"
        assert c["inside"], f"caption {c['text']!r} runs out of its thumbnail: {c}"
    return caps


def check_dropdowns(page) -> list[dict]:
    dds = page.evaluate(js(DROPDOWNS))
    for d in dds:
        assert d["sw"] <= d["cw"] + 1, f"dropdown {d['id']} shows only part of {d['text']!r}: {d}"
    return dds


def check_options(page, selector: str) -> list[dict]:
    page.click(selector)
    page.wait_for_selector("[role=listbox] [role=option]", timeout=10_000)
    opts = page.evaluate(js(OPTIONS))
    page.keyboard.press("Escape")
    assert opts
    for o in opts:
        assert o["sw"] <= o["cw"] + 1, f"option {o['text']!r} cut off: {o}"
        assert o["right"] <= o["width"] + 1, f"the options list runs off the page: {o}"
    return opts


def check_galleries(page) -> None:
    for g in page.evaluate(js(GALLERIES)):
        assert g["sw"] <= g["cw"] + 1, f"gallery {g['id']} is wider than its panel: {g}"


def check_tables(page, at_least: int) -> list[dict]:
    tables = page.evaluate(js(TABLES))
    assert len(tables) >= at_least, tables
    for t in tables:
        (bl, br), (cl, cr) = t["block"], t["column"]
        assert bl >= cl - 1 and br <= cr + 1, f"table {t['id']!r} overflows its column: {t}"
        if t["wide"]:
            assert t["overflow_x"] in ("auto", "scroll"), f"table {t['id']!r} is cut, not scrolled: {t}"
    return tables


@pytest.fixture
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("LATENT_ATLAS_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def page(atlas_app, browser):
    with open_page(browser, atlas_app[0], ready="#atlas-map .la-scatter[data-ready]", final_map=True, width=WIDTH, height=HEIGHT,
                   timeout=TIMEOUT) as p:
        yield p


def test_atlas_neighbour_captions_and_tables(page, shots):
    x, y = page.evaluate(POINT_POSITION, 0)
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelectorAll('#atlas-neighbours .caption-label').length >= 10",
                           timeout=60_000)
    lasso_everything(page)  # a lasso round the map fills the selection
    time.sleep(0.5)
    page.screenshot(path=str(shots / "cut-off-atlas.png"), full_page=True)
    caps = check_captions(page, 10)
    assert all(" · d=" in c["text"] for c in caps)  # 'digit-1342 · d=0.020', whole
    check_galleries(page)
    check_dropdowns(page)
    ids = [t["id"] for t in check_tables(page, 2)]
    assert "atlas-selection-table" in ids and "atlas-neighbours-table" in ids


def test_clusters_captions_menu_and_tables(page, shots):
    page.get_by_role("tab", name="Clusters").click()
    k = page.locator("#clusters-k input[type=number]")
    k.fill("6")
    k.press("Enter")
    page.click("#clusters-run")
    page.wait_for_function("document.querySelectorAll('#clusters-gallery .caption-label').length >= 8",
                           timeout=TIMEOUT)
    page.wait_for_function("document.querySelector('#clusters-pick input').value.includes(':')", timeout=60_000)
    time.sleep(0.5)
    page.screenshot(path=str(shots / "cut-off-clusters.png"), full_page=True)
    caps = check_captions(page, 6 + 8)
    assert any(c["text"].startswith("0: ") and len(c["text"]) > 10 for c in caps), caps  # '0: mixed (most label=2)'
    check_galleries(page)
    assert any(d["id"] == "clusters-pick" for d in check_dropdowns(page))
    check_options(page, "#clusters-pick input")
    tables = {t["id"]: t for t in check_tables(page, 1)}
    assert not tables["clusters-table"]["wide"], tables["clusters-table"]  # every column in view, no scrolling


@pytest.fixture
def tiny_regions():
    """Regions on a tiny random pipeline (fast; the captions are what is looked at), restored after."""
    from app.tabs import regions as tab
    from backends.generative import regions as R

    R.register_pipeline("tiny", R.tiny_random_pipeline)
    before = [svc.model for svc in tab.SERVICES]
    for svc in tab.SERVICES:
        svc.model = "tiny"
    yield
    for svc, model in zip(tab.SERVICES, before):
        svc.model = model


def test_regions_compare_captions(page, shots, tiny_regions):
    page.get_by_role("tab", name="Regions").click()
    page.click("#regions-example")
    page.wait_for_selector("#regions-preview img", timeout=60_000)
    page.get_by_label("Compare all (same seed)").check()
    page.click("#regions-generate")
    page.wait_for_function("document.querySelectorAll('#regions-result .caption-label').length >= 3",
                           timeout=TIMEOUT)
    time.sleep(0.5)
    page.screenshot(path=str(shots / "cut-off-regions.png"), full_page=True)
    texts = [c["text"] for c in check_captions(page, 3)]
    assert any(t.startswith("MultiDiffusion · ") for t in texts) and any(t.startswith("Paint-with-words") for t in texts)
    check_galleries(page)
    page.locator("#regions-result .thumbnail-item").nth(1).click()  # the preview's caption under the large image
    page.wait_for_selector("#regions-result .preview .caption", timeout=10_000)
    check_captions(page, 4)  # the preview's and the grid's (still drawn under it)
    assert page.inner_text("#regions-result .preview .caption") == texts[1]


def test_directions_menus_and_table(page, shots):
    page.get_by_role("tab", name="Directions").click()
    page.click("#dir-generate")
    page.wait_for_selector("#dir-image img", timeout=TIMEOUT)
    page.get_by_label("Samples", exact=True).fill("24")  # a small bank: the menus' text is what is looked at
    page.click("#dir-pca")
    page.wait_for_function("document.querySelector('#dir-slot-0 input').value.includes('PC')", timeout=TIMEOUT)
    time.sleep(0.5)
    page.screenshot(path=str(shots / "cut-off-directions.png"), full_page=True)
    slots = [d for d in check_dropdowns(page) if d["id"].startswith("dir-slot-")]
    assert len(slots) == 4 and all("[" in d["text"] and d["text"].endswith("]") for d in slots), slots
    check_options(page, "#dir-slot-1 input")
    tables = {t["id"]: t for t in check_tables(page, 1)}
    assert not tables["dir-table"]["wide"], tables["dir-table"]  # the judge's columns in view, no scrolling
