"""A real browser: sign in, choose a group with a key, lasso points, undo, lasso again, switch to the
box tool and box another group, submit (Enter), and the answer is in the admin export."""
import pandas as pd
import pytest

from conftest import free_port
from test_annotate_app import ADMIN, client, make_backends, make_demo

NAME, TOKEN = "browser-ann", "token-browser"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import numpy as np

    from app.tabs.annotate import store_for
    from backends.clusters.annotations import PlotSpec

    root = tmp_path_factory.mktemp("annotate-browser")
    backends = make_backends(root, root / "annotations.sqlite")
    rng = np.random.default_rng(0)
    xy = np.concatenate([rng.normal(size=(20, 2)) * 0.3 + [-2, 0], rng.normal(size=(20, 2)) * 0.3 + [2, 0]])
    store_for(backends).create_task_set("browser", [PlotSpec(xy), PlotSpec(xy[::-1].copy())], target_annotators=3)
    demo = make_demo(backends)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/", backends
    demo.close()


PIXELS = """() => {
  const div = document.querySelector('#ann-plot .la-plot');
  const fl = div._fullLayout, r = div.getBoundingClientRect();
  const pts = [];
  for (const tr of div._fullData) {
    if (!tr.customdata) continue;
    tr.x.forEach((x, k) => pts.push({i: tr.customdata[k],
      px: r.left + fl._size.l + fl.xaxis.l2p(x), py: r.top + fl._size.t + fl.yaxis.l2p(tr.y[k])}));
  }
  return pts;
}"""


def _lasso_left_half(page, pts):
    """Drag a lasso (a rectangle path) around the points left of the middle; returns their indices."""
    xs = sorted(p["px"] for p in pts)
    mid = (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    inside = sorted(p["i"] for p in pts if p["px"] < mid)
    x0, x1 = min(xs) - 12, mid
    y0, y1 = min(p["py"] for p in pts) - 12, max(p["py"] for p in pts) + 12
    path = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)]
    page.mouse.move(*path[0])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(path, path[1:]):
        for s in range(1, 7):
            page.mouse.move(ax + (bx - ax) * s / 6, ay + (by - ay) * s / 6)
    page.mouse.up()
    return inside


def _box_right_half(page, pts):
    """Drag a box over the points right of the middle; returns their indices."""
    xs = sorted(p["px"] for p in pts)
    mid = (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2
    ys = [p["py"] for p in pts]
    (x0, y0), (x1, y1) = (mid, min(ys) - 12), (max(xs) + 12, max(ys) + 12)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for s in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * s / 10, y0 + (y1 - y0) * s / 10)
    page.mouse.up()
    return sorted(p["i"] for p in pts if p["px"] > mid)


def _summary(page) -> str:
    return page.locator("#ann-summary").inner_text()


@pytest.mark.browser
def test_annotator_lassos_a_group_and_it_is_exported(app, browser):
    url, backends = app
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(url)
        page.locator("#ann-name input, #ann-name textarea").first.fill(NAME)
        page.locator("#ann-token input").first.fill(TOKEN)
        page.locator("#ann-sign-in").click()
        page.wait_for_function("document.querySelector('#ann-status').innerText.includes('Signed in')")
        page.wait_for_function("(document.querySelector('#ann-plot .la-scatter') || {dataset: {}}).dataset.points === '40'")
        page.locator("#ann-status").click()  # focus leaves the text fields, so keys go to the shortcuts
        page.keyboard.press("2")
        page.wait_for_function("document.querySelector('#ann-group input[value=\"cluster 2\"]').checked")

        pts = page.evaluate(PIXELS)
        assert len(pts) == 40
        inside = _lasso_left_half(page, pts)
        page.wait_for_function("document.querySelector('#ann-summary').innerText.includes('cluster 2')")
        assert f"cluster 2: {len(inside)}" in _summary(page)

        page.keyboard.press("u")  # undo
        page.wait_for_function("document.querySelector('#ann-summary').innerText.includes('Nothing selected')")
        pts = page.evaluate(PIXELS)
        inside = _lasso_left_half(page, pts)
        page.wait_for_function("document.querySelector('#ann-summary').innerText.includes('cluster 2')")

        page.keyboard.press("b")  # box tool
        page.wait_for_function("document.querySelector('#ann-plot .la-plot')._fullLayout.dragmode === 'select'")
        page.keyboard.press("3")
        right = _box_right_half(page, page.evaluate(PIXELS))
        page.wait_for_function("document.querySelector('#ann-summary').innerText.includes('cluster 3')")
        assert f"cluster 3: {len(right)}" in _summary(page)

        page.keyboard.press("Enter")  # submit
        page.wait_for_function("document.querySelector('#ann-status').innerText.includes('Stored answer')")
    except Exception:
        page.screenshot(path="/tmp/ann-browser-failure.png")
        print("summary:", _summary(page), "status:", page.locator("#ann-status").inner_text())
        raise
    finally:
        page.close()

    path = client(url).predict(ADMIN, "browser", "csv", api_name="/annotate_admin_export")
    ex = pd.read_csv(path)
    mine = ex[ex.annotator == NAME]
    assert len(mine) == 40  # one row per point of the plot
    assert sorted(mine[mine.group == "cluster 2"].point_id) == inside
    assert sorted(mine[mine.group == "cluster 3"].point_id) == right
    assert len(inside) + len(right) == 40 and set(mine.group) == {"cluster 2", "cluster 3"}
