"""The Atlas never contradicts itself (issue #19 items 2 and 7), in Chromium at 1400x1000."""
import io
import re

import numpy as np
import pytest
from PIL import Image

from browser_pages import fill_settled, lasso_everything, open_page

pytestmark = pytest.mark.browser

MAP = "document.querySelector('#atlas-map .la-plot')"


def test_search_after_a_lasso_custom_axes_and_switching_corpus(atlas_app, browser):
    with open_page(browser, atlas_app[0], ready="#atlas-map .la-scatter[data-ready]", final_map=True, width=1400, height=1000,
                   timeout=180_000) as page:
        # the map is the tab: most of a 1400-px screen
        assert page.locator("#atlas-map .la-plot").bounding_box()["width"] >= 800

        lasso_everything(page)
        assert page.evaluate(f"{MAP}.layout.selections.length") >= 1
        page.fill("#atlas-query textarea", "label=3")
        page.get_by_role("button", name="Search", exact=True).click()
        page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('match')",
                               timeout=180_000)
        # the old lasso and its dimmed points are gone; the hits are ringed
        page.wait_for_function(f"{MAP}.layout.selections.length === 0 && !{MAP}.data.some(t => t.selectedpoints)",
                               timeout=60_000)
        n_hits = int(page.inner_text("#atlas-selection").split()[0].replace(",", ""))
        assert page.evaluate(f"{MAP}.data.find(t => t.name === 'selected').x.length") == n_hits

        def table_x():
            return page.inner_text("#atlas-selection-table")

        before = table_x()
        assert before and not re.search(r"\d\.\d{6,}", before), before  # rounded coordinates

        page.get_by_text("Custom axes").click()
        fill_settled(page.get_by_label("x: A"), "label=0")
        fill_settled(page.get_by_label("x: B"), "label=1")
        assert page.get_by_label("x: A").input_value() == "label=0"
        page.get_by_role("button", name="Apply axes").click()
        page.wait_for_function(f"({MAP}.layout.title && {MAP}.layout.title.text.includes('custom axes')) || "
                               "document.querySelector('.toast-body')", timeout=180_000)
        assert not page.locator(".toast-body").all_inner_texts(), page.locator(".toast-body").all_inner_texts()
        # the hits are still marked, and the table shows the new coordinates
        page.wait_for_function(f"({MAP}.data.find(t => t.name === 'selected') || {{x: []}}).x.length === {n_hits}",
                               timeout=60_000)
        page.wait_for_function("(b) => document.querySelector('#atlas-selection-table').innerText !== b", arg=before,
                               timeout=60_000)
        assert str(n_hits) in page.inner_text("#atlas-selection")

        # another corpus starts clean: no old search text or custom-axes groups
        page.locator("#atlas-corpus input").click()
        page.get_by_role("option", name="shapes", exact=True).click()
        page.wait_for_function("document.querySelector('#atlas-query textarea').value === ''", timeout=180_000)
        assert page.get_by_label("x: A").input_value() == ""
        assert "Draw a lasso" in page.inner_text("#atlas-selection")


def test_search_hits_stay_visible_after_a_recolour(atlas_app, browser):
    """Coloured again by label after a search, the 183 hits (one dense cluster) are drawn in their own colour
    on top of the faded rest, not as a black blob of overlapping rings (issue #19 item 2)."""
    with open_page(browser, atlas_app[0], ready="#atlas-map .la-scatter[data-ready]", final_map=True, width=1400,
                   height=1000, timeout=180_000) as page:
        page.fill("#atlas-query textarea", "label=3")
        page.get_by_role("button", name="Search", exact=True).click()
        page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('match')",
                               timeout=180_000)
        n_hits = int(page.inner_text("#atlas-selection").split()[0].replace(",", ""))
        for colour, trace in (("(none)", "items"), ("label", "3")):
            page.locator("#atlas-color input").click()
            page.get_by_role("option", name=colour, exact=True).click()
            page.wait_for_function(f"{MAP}.data.some(t => t.name === '{trace}')", timeout=60_000)
        traces = page.evaluate(f"{MAP}.data.map(t => ({{name: t.name, opacity: t.marker.opacity, color: t.marker.color, n: t.x.length}}))")
        hits = next(t for t in traces if t["name"] == "selected")
        three = next(t for t in traces if t["name"] == "3")
        assert hits["n"] == n_hits and hits["color"] == [three["color"]] * n_hits, hits
        assert all(t["opacity"] < 0.5 for t in traces if t["name"] not in ("selected", "highlight"))
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#atlas-map").screenshot())).convert("RGB"))
        assert (shot.max(axis=-1) < 60).mean() < 0.002  # near-black pixels: 0.0033 with the rings, 0.0010 now
