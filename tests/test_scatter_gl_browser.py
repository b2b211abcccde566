"""The WebGL map for large corpora (app/components/scatter_gl.py) in headless Chromium.

A standalone gr.Blocks page with two maps: 1,000,000 points (drawn, ≤ 12 bytes a point fetched, a lasso's
indices reach Python) and 2,000 points (a click gives Python the index, hover shows the item's text,
highlight rings). WebGL runs on Chromium's software renderer (SwiftShader) with the suite's usual flags
(--headless --disable-gpu ...): no extra flag is needed.
"""
import json

import numpy as np
import pytest

from browser_pages import open_page
from conftest import free_port

pytestmark = pytest.mark.browser

N_BIG = 1_000_000
N_SMALL = 2_000


def blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = rng.normal(scale=6, size=(10, 2))
    xy = centres[labels] + rng.normal(size=(n, 2))
    return xy.astype(np.float32), labels


@pytest.fixture(scope="module")
def gl_page(tmp_path_factory):
    import gradio as gr

    from app.components.scatter import static_paths
    from app.components.scatter_gl import MapFiles, indices_from_event, scatter_gl_map, scatter_gl_payload

    files = MapFiles(tmp_path_factory.mktemp("maps"))
    gr.set_static_paths(static_paths() + [str(files.root)])
    big_xy, big_labels = blobs(N_BIG)
    small_xy, small_labels = blobs(N_SMALL, seed=1)
    big = scatter_gl_payload(big_xy, files=files, color=big_labels.astype(str), color_name="label",
                             hover=lambda: [f"big-{i} · label={c}" for i, c in enumerate(big_labels.tolist())],
                             tips_key="big", title="A million points", uirevision="big")
    small = scatter_gl_payload(small_xy, files=files, color=small_xy[:, 0] * 3.0, color_name="x",
                               hover=[f"small-{i}" for i in range(N_SMALL)], title="Two thousand", uirevision="small")

    def selected(evt: gr.EventData):
        idx = indices_from_event(evt._data)
        return json.dumps({"count": len(idx), "sum": int(np.sum(idx, dtype=np.int64)), "head": idx[:3]})

    def clicked(evt: gr.EventData):
        return str(int(evt._data["index"]))

    with gr.Blocks() as big_demo:
        m_big = scatter_gl_map(height=500, elem_id="big", value=big)
        sel = gr.Textbox(elem_id="big-sel")
        m_big.points_selected(selected, None, sel)
    with gr.Blocks() as small_demo:  # a page of its own: no million points to draw before each test
        m_small = scatter_gl_map(height=400, elem_id="small", value=small)
        clk = gr.Textbox(elem_id="small-click")
        small_sel = gr.Textbox(elem_id="small-sel")
        m_small.point_click(clicked, None, clk)
        m_small.points_selected(selected, None, small_sel)
    urls = []
    for demo in (big_demo, small_demo):
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        urls.append(f"http://127.0.0.1:{port}/")
    yield {"url": urls[0], "small_url": urls[1], "big": json.loads(big), "small": json.loads(small),
           "big_xy": big_xy, "big_labels": big_labels, "small_xy": small_xy, "root": str(files.root)}
    big_demo.close()
    small_demo.close()


# Counts the frames regl-scatterplot draws from now on (its 'draw' event comes after each).
COUNT_DRAWS = """(() => { window.__draws = 0; if (!window.__drawsHooked) { window.__drawsHooked = true;
  document.querySelector('#big .la-scatter').__laGl.plot.subscribe('draw', () => { window.__draws++; }); } })()"""


def settle(page, sel: str, quiet_ms: int = 1000) -> None:
    """Wait until the map has drawn no frame for quiet_ms (a resize or a reset may still be drawing)."""
    page.evaluate("""([sel, quiet]) => new Promise(done => { const sp = document.querySelector(sel + ' .la-scatter').__laGl.plot;
      let last = performance.now(); sp.subscribe('draw', () => { last = performance.now(); });
      const check = () => performance.now() - last > quiet ? done() : setTimeout(check, 100); check(); })""",
                  [sel, quiet_ms])


def painted(page, sel: str) -> int:
    """Pixels of the map's canvas that differ from its background."""
    return page.evaluate(f"""() => {{
      const c = document.querySelector('{sel} .la-gl-points');
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let k = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3] && !(d[i] === 250 && d[i + 1] === 250 && d[i + 2] === 250)) k++;
      return k;
    }}""")


def test_a_million_points_draw_from_at_most_12_bytes_a_point_and_a_lasso_reaches_python(gl_page, browser):
    value = gl_page["big"]
    assert len(json.dumps(value)) < 2_000  # the value through Gradio: a few hundred bytes, whatever N
    fetched = {}
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = ctx.new_page()

        def on_response(resp):
            if gl_page["root"] in resp.url:
                fetched[resp.url] = resp.request.sizes()["responseBodySize"]

        page.on("requestfinished", lambda req: on_response(req.response()))
        page.goto(gl_page["url"])
        page.wait_for_selector("#big .la-scatter[data-gl-ready]", state="attached", timeout=120_000)
        assert page.evaluate("document.querySelector('#big .la-scatter').dataset.points") == str(N_BIG)
        assert painted(page, "#big") > 20_000
        page.wait_for_timeout(200)
        mine = {k: v for k, v in fetched.items() if k.endswith(value["points"].split("/")[-1])
                or "/tips-" in k and "/tips-" in value["tips"] and k.split("/tips-")[1][:40] in value["tips"]}
        points_bytes = sum(v for k, v in mine.items() if k.endswith(".bin"))
        assert points_bytes == 10 * N_BIG, fetched  # float32 x, y + uint16 category
        assert sum(mine.values()) + len(json.dumps(value)) <= 12 * N_BIG, mine
        legend = page.locator("#big .la-gl-legend .la-gl-key").all_inner_texts()
        assert legend == [str(i) for i in range(10)], legend

        # hover: the tooltip of a point whose chunk of texts is not in the page yet, with no frame drawn in
        # between or after (a frame of a million points takes 1-2 s in software GL; the map used to redraw
        # for its hover highlight, and the fetched chunk waited for that frame)
        settle(page, "#big")
        page.evaluate(COUNT_DRAWS)
        target = 123_457
        pos = page.evaluate(f"document.querySelector('#big .la-scatter').__laGl.plot.getScreenPosition({target})")
        area = page.locator("#big .la-gl-area").bounding_box()
        page.mouse.move(area["x"] + pos[0], area["y"] + pos[1])
        page.wait_for_function("document.querySelector('#big .la-scatter').dataset.hovered", timeout=30_000)
        hovered = int(page.get_attribute("#big .la-scatter", "data-hovered"))
        near = page.evaluate(f"document.querySelector('#big .la-scatter').__laGl.plot.getScreenPosition({hovered})")
        assert np.hypot(near[0] - pos[0], near[1] - pos[1]) < 7, (target, hovered, pos, near)
        labels = gl_page["big_labels"]
        assert page.locator("#big .la-tip").inner_text() == f"big-{hovered} · label={labels[hovered]}"
        page.wait_for_timeout(500)
        assert page.evaluate("window.__draws") == 0
        page.mouse.move(area["x"] + area["width"] + 30, area["y"] + 10)  # off the map: the tooltip goes
        page.wait_for_selector("#big .la-tip", state="hidden", timeout=10_000)

        # the lasso below: its frame is held until Python has answered (however long that takes here), then
        # drawn (released by the test, not by the time limit or by the page going quiet)
        page.evaluate("Object.assign(document.querySelector('#big .la-scatter').__laGl.tune,"
                      " {holdMs: 600_000, quietMs: 600_000, slowFrameMs: 0})")
        settle(page, "#big")
        page.evaluate(COUNT_DRAWS)

        # a lasso (programmatic, in the map's normalised coordinates): the same indices in Python
        page.evaluate("""() => document.querySelector('#big .la-scatter').__laGl.plot.lassoSelect(
            [[-0.3, -0.3], [0.3, -0.3], [0.3, 0.3], [-0.3, 0.3]], {isGl: true})""")
        answered = page.wait_for_function("""() => document.querySelector('#big-sel textarea').value.includes('count')
            && {draws: window.__draws}""", timeout=60_000).json_value()
        assert answered["draws"] == 0  # Python's answer was in before the map redrew
        got = json.loads(page.locator("#big-sel textarea").input_value())
        from app.components.scatter_gl import normalise

        norm = normalise(gl_page["big_xy"])
        inside = np.flatnonzero((np.abs(norm[:, 0]) < 0.3) & (np.abs(norm[:, 1]) < 0.3))
        assert got["count"] == len(inside) > 1_000, (got, len(inside))
        assert got["sum"] == int(inside.sum()) and got["head"] == inside[:3].tolist()
        assert page.get_attribute("#big .la-scatter", "data-held-frames") == "1"
        page.evaluate("document.querySelector('#big .la-scatter').__laGl.release()")
        page.wait_for_function("window.__draws > 0", timeout=60_000)  # and then the selection is drawn

    finally:
        ctx.close()


def test_click_hover_and_highlight_on_a_small_gl_map(gl_page, browser):
    with open_page(browser, gl_page["small_url"], ready="#small .la-scatter[data-gl-ready]", timeout=120_000) as page:
        legend = page.locator("#small .la-gl-legend").inner_text()
        assert "x" in legend and page.locator("#small .la-gl-ramp").count() == 1
        # a point alone at the map's edge, so the nearest one under the mouse is unambiguous
        from app.components.scatter_gl import normalise

        norm = normalise(gl_page["small_xy"])
        d = np.linalg.norm(norm[:, None, :] - norm[None, :, :], axis=2)
        np.fill_diagonal(d, np.inf)
        target = int(np.argmax(d.min(axis=1)))
        pos = page.evaluate(f"document.querySelector('#small .la-scatter').__laGl.plot.getScreenPosition({target})")
        box = page.locator("#small .la-gl-area").bounding_box()
        x, y = box["x"] + pos[0], box["y"] + pos[1]
        page.mouse.move(x - 30, y - 30)
        page.mouse.move(x, y, steps=5)
        page.wait_for_function(f"document.querySelector('#small .la-scatter').dataset.hovered === '{target}'",
                               timeout=10_000)
        tip = page.locator("#small .la-tip")
        assert tip.is_visible() and tip.inner_text() == f"small-{target}"
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#small-click textarea').value === '{target}'", timeout=30_000)
        # the map keeps showing no selection after a click (a click is not a selection)
        sel = page.evaluate("document.querySelector('#small .la-scatter').__laGl.plot.get('selectedPoints').length")
        assert sel == 0

        # a lasso drawn with the mouse, closed where it began: Python gets what the map selected, and the
        # click regl-scatterplot sees at its end is not taken for a click on a point
        page.evaluate("document.querySelector('#small-click textarea').value = ''")
        box = page.locator("#small .la-gl-area").bounding_box()
        cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 0.3 * box["height"]
        page.mouse.move(cx - r, cy - r)
        page.mouse.down()
        for dx, dy in [(r, -r), (r, r), (-r, r), (-r, -r)]:
            page.mouse.move(cx + dx, cy + dy, steps=8)
            page.wait_for_timeout(30)  # regl-scatterplot samples the lasso every 10 ms
        page.mouse.up()
        page.wait_for_function("document.querySelector('#small-sel textarea').value.includes('count')", timeout=30_000)
        got = json.loads(page.locator("#small-sel textarea").input_value())
        shown = page.evaluate("document.querySelector('#small .la-scatter').__laGl.plot.get('selectedPoints').length")
        assert got["count"] == shown > 20, (got, shown)
        page.wait_for_timeout(500)
        assert page.locator("#small-click textarea").input_value() == ""

        # Python's highlight (the clicked item and neighbours) as red rings; the selection as regl's selection
        from app.components.scatter_gl import scatter_gl_patch

        patch = scatter_gl_patch(gl_page["small"]["uirevision"], N_SMALL, highlight=[target, 0, 1], selected=[5, 6, 7])
        page.evaluate("(p) => document.querySelector('#small .la-scatter').__laGl.render(JSON.parse(p))", patch)
        page.wait_for_function("document.querySelector('#small .la-scatter').dataset.patched", timeout=10_000)
        assert page.evaluate("document.querySelector('#small .la-scatter').__laGl.plot.get('selectedPoints')") == [5, 6, 7]
        red = page.evaluate("""() => { const c = document.querySelector('#small .la-gl-marks');
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let k = 0;
          for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i + 1] < 40 && d[i + 3] > 200) k++; return k; }""")
        assert red > 50, red

        # the mode buttons: box selection, pan (drag moves the view), lasso again
        plot = "document.querySelector('#small .la-scatter').__laGl.plot"
        page.click("#small .la-gl-modes button[data-mode='rectangle']")
        assert page.evaluate(f"[{plot}.get('mouseMode'), {plot}.get('lassoType')]") == ["lasso", "rectangle"]
        page.click("#small .la-gl-modes button[data-mode='panZoom']")
        assert page.evaluate(f"{plot}.get('mouseMode')") == "panZoom"
        assert page.locator("#small .la-gl-modes button.on").inner_text() == "Pan"
        page.click("#small .la-gl-modes button[data-mode='lasso']")
        assert page.evaluate(f"[{plot}.get('mouseMode'), {plot}.get('lassoType')]") == ["lasso", "freeform"]


def test_the_atlas_draws_large_corpora_with_regl_and_its_events_fill_the_tables(atlas_app, browser, monkeypatch):
    """The Atlas with GL_THRESHOLD lowered to 0 (the digits, 1,797 points, drawn as a large corpus would be):
    hover shows the thumbnail, a click fills the neighbours (rings on the map), a lasso the selection table,
    a search selects its hits on the map."""
    from app.components import scatter_gl

    monkeypatch.setattr(scatter_gl, "GL_THRESHOLD", 0)
    root = "#atlas-map .la-scatter"
    with open_page(browser, atlas_app[0], ready=f"{root}[data-gl-ready]", timeout=180_000, final_map=True) as page:
        assert page.get_attribute(root, "data-points") == "1797"
        assert not page.locator("#atlas-map .la-plot").is_visible()
        # a point far from the others, so the click lands on it
        xy = np.array(page.evaluate(f"""() => {{ const sp = document.querySelector('{root}').__laGl.plot;
            return Array.from({{length: 1797}}, (_, i) => sp.getScreenPosition(i)); }}"""))
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
        np.fill_diagonal(d, np.inf)
        target = int(np.argmax(d.min(axis=1)))
        box = page.locator("#atlas-map .la-gl-area").bounding_box()
        x, y = box["x"] + xy[target, 0], box["y"] + xy[target, 1]
        page.mouse.move(x - 20, y - 20)
        page.mouse.move(x, y, steps=4)
        page.wait_for_selector("#atlas-map .la-tip img", state="visible", timeout=10_000)  # hover thumbnail
        item_id = page.locator("#atlas-map .la-tip").inner_text().split(" ·")[0]
        assert item_id.startswith("digit-") and int(item_id[len("digit-"):]) == target, item_id
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#atlas-item-id textarea').value === '{item_id}'",
                               timeout=60_000)
        assert "distance" in page.inner_text("#atlas-neighbours-table")
        page.wait_for_function(f"document.querySelector('{root}').dataset.patched", timeout=30_000)

        page.evaluate(f"""() => document.querySelector('{root}').__laGl.plot.lassoSelect(
            [[-2, -2], [2, -2], [2, 2], [-2, 2]], {{isGl: true}})""")
        page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('1,797 items selected')",
                               timeout=60_000)
        assert "digit-" in page.inner_text("#atlas-selection-table")

        page.fill("#atlas-query textarea", "label=3")
        page.get_by_role("button", name="Search", exact=True).click()
        page.wait_for_function("document.querySelector('#atlas-selection').innerText.includes('match')", timeout=60_000)
        hits = int(page.inner_text("#atlas-selection").split()[0].replace(",", ""))
        page.wait_for_function(f"document.querySelector('{root}').__laGl.plot.get('selectedPoints').length === {hits}",
                               timeout=30_000)
        assert 100 < hits < 300
        # the hits stand out: while something is selected the other points fade (they were drawn as before)
        assert page.evaluate(f"document.querySelector('{root}').__laGl.plot.get('opacityInactiveScale')") < 0.5
        # a tooltip near the bottom edge opens above its point, inside the map (it was cut off below)
        box = page.locator("#atlas-map .la-gl-area").bounding_box()  # the page may have scrolled to the search box
        inside = np.flatnonzero(xy[:, 1] < box["height"] - 10)
        low = int(inside[np.argmax(xy[inside, 1])])
        assert xy[low, 1] > box["height"] - 120, (xy[low], box)  # too low for a tooltip below it
        page.mouse.move(box["x"] + xy[low, 0] - 15, box["y"] + xy[low, 1] - 15)
        page.mouse.move(box["x"] + xy[low, 0], box["y"] + xy[low, 1], steps=3)
        page.wait_for_selector("#atlas-map .la-tip img", state="visible", timeout=10_000)
        page.wait_for_function("document.querySelector('#atlas-map .la-tip img').complete", timeout=10_000)
        tip, area = page.locator("#atlas-map .la-tip").bounding_box(), page.locator("#atlas-map .la-scatter").bounding_box()
        assert tip["y"] >= area["y"] - 1 and tip["y"] + tip["height"] <= area["y"] + area["height"] + 1, (tip, area)
