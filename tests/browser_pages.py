"""Opening a page of the app in a fresh browser context (the browser tests' shared fixture body)."""
from __future__ import annotations

import contextlib

# page positions ({px, py}) of the Annotate plot's points, in the order of the plot's x/y
ANNOTATE_POINT_PIXELS = """() => {
  const div = document.querySelector('#ann-plot .la-plot');
  const fl = div._fullLayout, r = div.getBoundingClientRect();
  const pts = [];
  for (const tr of div._fullData) {
    if (!tr.customdata) continue;
    tr.x.forEach((x, k) => pts.push({px: r.left + fl._size.l + fl.xaxis.l2p(x),
                                     py: r.top + fl._size.t + fl.yaxis.l2p(tr.y[k])}));
  }
  return pts;
}"""


# the Atlas map is drawn (its title "<corpus> · N items · <projection>" shows) and is not the PCA preview
# that the UMAP map replaces on a fresh cache (app/tabs/atlas.py)
ATLAS_FINAL_MAP = ("() => { const t = (document.querySelector('#atlas-map') || {innerText: ''}).innerText; "
                   "return t.includes(' items · ') && !t.includes('PCA for now'); }")


@contextlib.contextmanager
def open_page(browser, url: str, *, tab: str | None = None, ready: str | None = None, width: int = 1500,
              height: int = 1000, timeout: int = 60_000, final_map: bool = False):
    """A page at `url` in its own context; `tab`: click that tab; `ready`: wait until this selector
    is visible; `final_map`: and until the Atlas map is no longer the PCA preview shown while UMAP
    runs on a fresh cache (a lasso drawn as the map is replaced is lost). The context is closed
    afterwards."""
    ctx = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = ctx.new_page()
        page.goto(url)
        if tab:
            page.get_by_role("tab", name=tab).click()
        if ready:
            page.wait_for_selector(ready, state="visible", timeout=timeout)
        if final_map:
            page.wait_for_function(ATLAS_FINAL_MAP, timeout=max(timeout, 300_000), polling=500)
        yield page
    finally:
        ctx.close()


def lasso_everything(page, plot: str = "#atlas-map", *, wait_for: str | None = "#atlas-selection"):
    """Draw a lasso round the whole plot area of the map `plot`; wait until `wait_for` says 'selected'."""
    box = page.locator(f"{plot} .nsewdrag").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.down()
    for px, py in [(box["width"] - 5, 5), (box["width"] - 5, box["height"] - 5), (5, box["height"] - 5), (5, 5)]:
        page.mouse.move(box["x"] + px, box["y"] + py, steps=4)
    page.mouse.up()
    if wait_for:
        page.wait_for_function(f"document.querySelector('{wait_for}').innerText.includes('selected')",
                               timeout=60_000)


def fill_settled(field, value: str, *, tries: int = 5, settle_ms: int = 500) -> None:
    """Type `value` into the input `field` (a Playwright locator) and leave it with Tab, so that Gradio
    commits it; then check that it is still there a moment later, and type it again if not. An
    accordion mounts its content when first opened, and a value typed while that happens is replaced
    by the component's default (CI saw a budget of 8 run as 60, and "x axis A is empty")."""
    for _ in range(tries):
        field.fill(value)
        field.press("Tab")
        field.page.wait_for_timeout(settle_ms)
        if field.input_value() == value:
            return
    raise AssertionError(f"the field kept {field.input_value()!r} instead of {value!r}")
