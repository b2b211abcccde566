"""The map at a million points (issue #21 items 1 and 4): regl-scatterplot (app/components/scatter_gl.py)
at 1,000,000 points against the Plotly map (app/components/scatter.py) at 100,000, in headless Chromium
(Playwright, 1400×1000, software WebGL: SwiftShader, as the browser tests run it).

For each map, a standalone gr.Blocks page with the map and a textbox its `points_selected` event fills:

- python: the component's value built from the coordinates (normalise, colour codes, the points file and
  the tooltip chunks for GL; the JSON for Plotly).
- first paint: page.goto → the map drawn (the element's data-ready), and python + that = the time from
  coordinates to a drawn map. Target ≤ 10 s for 1M points.
- bytes a point: what the page fetched for the map (GL: the points file; Plotly: the value's JSON inside
  Gradio's config) / n. Target ≤ 12.
- lasso → Python: until Python's handler has written the selection's count into the textbox (p50 of
  --repeats). Target ≤ 2 s. GL: scatterplot.lassoSelect (the lasso's polygon given, the same path from
  the selection on) and one mouse lasso timed from the mouse-up; Plotly: mouse lassos from the mouse-up.
  In SwiftShader every frame of a million points takes 1–2 s of the page's main thread; the map holds
  the frame that draws the selection back (up to 1 s) so that Python's answer comes first. GL also:
  "lasso → drawn", until that frame has been drawn (the 'draw' event after the lasso), and the frames
  drawn before Python's answer was in the textbox (0 when the hold worked).
- hover → tooltip: the mouse moved onto a random point i (from off the map) until the tooltip shows
  (p50 of 2 × --repeats, timed in the page from the mousemove event). Target ≤ 200 ms. GL: the page
  picks the point itself and draws no frame; i's chunk of TIP_CHUNK texts is fetched then ("frames" counts
  the frames drawn from the mousemove to 300 ms after the tooltip: 0). "cached": then the point next to the
  one shown, in the chunk already fetched, hovered with the component's hover(k) (what a mousemove does once
  it has picked k). Plotly's tooltips are all in the page: both columns are the same.

    python bench/bench_map_1m.py [--n 1000000] [--plotly-n 100000] [--repeats 5] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
from common import Timer  # noqa: F401  (puts the repo root on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WIDTH, HEIGHT = 1400, 1000
STEPS = 2  # mouse moves per side of a lasso (each redraws the map)


def blobs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centres = rng.normal(scale=6, size=(10, 2))
    return (centres[labels] + rng.normal(size=(n, 2))).astype(np.float32), labels


def launch(make_value, map_root: str | None):
    from app.components.scatter import static_paths
    from app.components.scatter_gl import indices_from_event, scatter_gl_map
    from conftest import free_port

    gr.set_static_paths(static_paths() + ([map_root] if map_root else []))
    t0 = time.perf_counter()
    value = make_value()
    python_s = time.perf_counter() - t0

    def selected(evt: gr.EventData):
        idx = indices_from_event(evt._data)
        return json.dumps({"count": len(idx), "t": time.time()})

    with gr.Blocks() as demo:
        m = scatter_gl_map(height=620, elem_id="map", value=value)
        sel = gr.Textbox(elem_id="sel")
        m.points_selected(selected, None, sel)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{port}/", value, python_s


def mouse_lasso(page, area: str, half: float):
    box = page.locator(area).bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    r = half * min(box["width"], box["height"])
    page.mouse.move(cx - r, cy - r)
    page.mouse.down()
    for dx, dy in [(r, -r), (r, r), (-r, r), (-r, -r)]:
        page.mouse.move(cx + dx, cy + dy, steps=STEPS)
        page.wait_for_timeout(20)  # regl-scatterplot samples the lasso every 10 ms
    t0 = time.perf_counter()
    page.mouse.up()
    return t0


def measure(browser, url: str, value: str, n: int, kind: str, repeats: int) -> dict:
    parsed = json.loads(value)
    sizes: dict[str, int] = {}
    ctx = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    out: dict = {"kind": kind, "n": n}
    try:
        page = ctx.new_page()
        page.on("requestfinished", lambda req: sizes.__setitem__(req.url, req.response().request.sizes()["responseBodySize"]))
        t0 = time.perf_counter()
        page.goto(url)
        ready = "#map .la-scatter[data-gl-ready]" if kind == "gl" else "#map .la-scatter[data-ready]"
        page.wait_for_selector(ready, state="attached", timeout=300_000)
        out["first_paint_s"] = time.perf_counter() - t0
        log(f"{kind} {n:,}: drawn in {out['first_paint_s']:.2f} s")
        if kind == "gl":
            out["browser_times"] = page.evaluate("document.querySelector('#map .la-scatter').__laGlTimes")
            fetched = sum(v for k, v in sizes.items() if k.endswith(parsed["points"].split("/")[-1]))
        else:
            fetched = len(value.encode())  # the value travels inside Gradio's config as JSON
        out["bytes_per_point"] = (fetched + len(value.encode()) * (kind == "gl")) / n
        page.wait_for_timeout(500)

        area = "#map .la-gl-area" if kind == "gl" else "#map .nsewdrag"
        wait = "(b) => { const v = document.querySelector('#sel textarea').value; return v && v !== b; }"
        lasso, counts, drawn, early, released = [], [], [], [], []
        if kind == "gl":
            page.evaluate(FRAME_LOG)
        for r in range(repeats):
            before = page.locator("#sel textarea").input_value()
            if kind == "gl":  # the selection's path without the mouse (each frame of 1M points takes 1-2 s in SwiftShader)
                h = 0.2 + 0.05 * r
                t0 = time.perf_counter()
                page.evaluate("(h) => { window.__frames.lasso = performance.now(); window.__frames.drawn = null;"
                              " window.__frames.before = window.__frames.count;"
                              " document.querySelector('#map .la-scatter').__laGl.plot.lassoSelect("
                              "[[-h, -h], [h, -h], [h, h], [-h, h]], {isGl: true}); }", h)
            else:
                t0 = mouse_lasso(page, area, 0.12 + 0.03 * r)
            page.wait_for_function(wait, arg=before, timeout=300_000)
            lasso.append(time.perf_counter() - t0)
            counts.append(json.loads(page.locator("#sel textarea").input_value())["count"])
            if kind == "gl":
                early.append(page.evaluate("window.__frames.count - window.__frames.before"))
                page.wait_for_function("window.__frames.drawn", timeout=300_000)
                released.append(page.evaluate("document.querySelector('#map .la-scatter').__laGl.frames.released"))
                drawn.append(page.evaluate("window.__frames.drawn - window.__frames.lasso") / 1000)
                log(f"  lasso {r}: {lasso[-1]:.2f} s to Python's answer ({early[-1]} frames before it),"
                    f" {drawn[-1]:.2f} s to the selection drawn (frame held until: {released[-1] or '-'})")
            else:
                log(f"  lasso {r}: {lasso[-1]:.2f} s")
            if kind != "gl":  # Plotly: clear the lasso (a double click: Python hears an empty selection) first
                page.mouse.dblclick(*_centre(page, area))
                page.wait_for_function("() => { const v = document.querySelector('#sel textarea').value;"
                                       " return v && JSON.parse(v).count === 0; }", timeout=120_000)
        out["lasso_s"], out["lasso_counts"] = lasso, counts
        if kind == "gl":
            out["lasso_drawn_s"], out["lasso_frames_before_answer"] = drawn, early
            out["lasso_frame_released_by"] = released
        if kind == "gl":  # and one drawn with the mouse, timed from the mouse-up
            before = page.locator("#sel textarea").input_value()
            t0 = mouse_lasso(page, area, 0.12)
            page.wait_for_function(wait, arg=before, timeout=300_000)
            out["mouse_lasso_s"] = time.perf_counter() - t0
            out["mouse_lasso_count"] = json.loads(page.locator("#sel textarea").input_value())["count"]

        rng = np.random.default_rng(7)
        hover, hover_cached, hover_frames = [], [], []
        far = page.locator("#sel").bounding_box()  # off the map: the tooltip hides between samples
        for i in rng.choice(n, size=repeats * 2, replace=False).tolist():
            page.mouse.move(far["x"] + 5, far["y"] + 5)
            page.wait_for_timeout(300)
            if kind == "gl":
                pos = page.evaluate("(i) => { const a = document.querySelector('#map .la-gl-area').getBoundingClientRect();"
                                    " const p = document.querySelector('#map .la-scatter').__laGl.plot.getScreenPosition(i);"
                                    " return [a.left + p[0], a.top + p[1]]; }", i)
            else:
                pos = page.evaluate(PLOTLY_POSITION, i)
            page.evaluate(HOVER_TIMER)
            if kind == "gl":
                frames0 = page.evaluate("window.__frames.count")
            page.mouse.move(*pos)
            if kind == "gl":  # the component notes when it put the text in the tooltip
                shown = "(document.querySelector('#map .la-scatter').__laHover || {}).shown"
                page.wait_for_function(f"window.__hov.move && {shown} > window.__hov.move", timeout=60_000)
                hover.append(page.evaluate(f"{shown} - window.__hov.move"))
                page.wait_for_timeout(300)
                hover_frames.append(page.evaluate("window.__frames.count") - frames0)
                # the point next to the one shown (in its chunk, already in the page), hovered programmatically
                hover_cached.append(page.evaluate(CACHED_HOVER))
            else:
                page.wait_for_function("window.__hov.shown", timeout=60_000)
                hover.append(page.evaluate("window.__hov.shown - window.__hov.move"))
                hover_cached.append(hover[-1])
        out["hover_cached_ms"] = hover_cached
        if kind == "gl":
            out["hover_frames"] = hover_frames
        out["hover_ms"] = hover
    finally:
        ctx.close()
    return out


# Where point i of the Plotly map is on the page (its trace: customdata holds the row indices).
PLOTLY_POSITION = """(i) => { const d = document.querySelector('#map .la-plot'); const fl = d._fullLayout;
  const t = d._fullData.findIndex(tr => tr.customdata && tr.customdata.includes(i)); const tr = d._fullData[t];
  const k = tr.customdata.indexOf(i); const r = d.querySelector('.nsewdrag').getBoundingClientRect();
  return [r.left + fl.xaxis.l2p(tr.x[k]), r.top + fl.yaxis.l2p(tr.y[k])]; }"""

# From the mouse's next move on the page to the tooltip shown with a new text (Plotly: when the tooltip's
# mutation is observed; GL: the time the component notes in __laHover.shown).
HOVER_TIMER = """() => { window.__hov = {}; const tip = document.querySelector('#map .la-tip');
  document.addEventListener('mousemove', () => { window.__hov.move = performance.now(); }, {capture: true, once: true});
  new MutationObserver((m, obs) => { if (tip.style.display === 'block' && tip.innerText.trim()) {
    window.__hov.shown = performance.now(); obs.disconnect(); } })
    .observe(tip, {childList: true, subtree: true, attributes: true}); }"""


CACHED_HOVER = """() => { const root = document.querySelector('#map .la-scatter'); const h = Number(root.dataset.hovered);
  const k = h ^ 1; const t0 = performance.now(); root.__laGl.hover(k);
  return root.__laHover.index === k ? root.__laHover.shown - t0 : null; }"""

# The frames regl-scatterplot draws (its 'draw' event comes after each): a count, and the time of the first
# one after a lasso.
FRAME_LOG = """() => { const f = window.__frames = {count: 0, drawn: null, lasso: 0, before: 0};
  document.querySelector('#map .la-scatter').__laGl.plot.subscribe('draw', () => {
    f.count++; if (f.drawn === null && f.lasso) f.drawn = performance.now(); }); }"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _centre(page, sel):
    b = page.locator(sel).bounding_box()
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--plotly-n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-plotly", action="store_true")
    ap.add_argument("--skip-gl", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from app.components.scatter import scatter_payload
    from app.components.scatter_gl import MapFiles, scatter_gl_payload
    from conftest import CHROMIUM, CHROMIUM_ARGS

    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        files = MapFiles(Path(tmp) / "maps")
        runs = ([] if args.skip_gl else [("gl", args.n)]) + ([] if args.skip_plotly else [("plotly", args.plotly_n)])
        for kind, n in runs:
            xy, labels = blobs(n)

            def make_value(xy=xy, labels=labels, kind=kind, n=n):
                hover = [f"item-{i} · label={c}" for i, c in enumerate(labels.tolist())]
                if kind == "gl":
                    return scatter_gl_payload(xy, files=files, color=labels.astype(str), color_name="label",
                                              hover=hover, title=f"{n:,} points", uirevision="bench")
                return scatter_payload(xy, ids=[f"item-{i}" for i in range(n)], color=labels.astype(str),
                                       color_name="label", hover=hover, title=f"{n:,} points")

            demo, url, value, python_s = launch(make_value, str(files.root) if kind == "gl" else None)
            try:
                r = measure(browser, url, value, n, kind, args.repeats)
            finally:
                demo.close()
            r["python_s"] = python_s
            r["coords_to_paint_s"] = python_s + r["first_paint_s"]
            results.append(r)
        browser.close()

    med = statistics.median
    print(f"{'map':>8} {'points':>10} {'python s':>9} {'page→paint s':>13} {'coords→paint s':>15} "
          f"{'B/point':>8} {'lasso→py s':>11} {'hover ms':>9} {'(cached)':>9}")
    for r in results:
        print(f"{r['kind']:>8} {r['n']:>10,} {r['python_s']:>9.2f} {r['first_paint_s']:>13.2f} "
              f"{r['coords_to_paint_s']:>15.2f} {r['bytes_per_point']:>8.2f} {med(r['lasso_s']):>11.3f} "
              f"{med(r['hover_ms']):>9.1f} {med(r['hover_cached_ms']):>9.1f}")
        if "lasso_drawn_s" in r:
            print(f"{'':>8} lasso → Python {min(r['lasso_s']):.2f}–{max(r['lasso_s']):.2f} s (frames drawn before the"
                  f" answer: {r['lasso_frames_before_answer']}, held frame released by"
                  f" {r['lasso_frame_released_by']}); lasso → selection drawn p50"
                  f" {med(r['lasso_drawn_s']):.2f} s ({min(r['lasso_drawn_s']):.2f}–{max(r['lasso_drawn_s']):.2f});"
                  f" hover → tooltip {min(r['hover_ms']):.0f}–{max(r['hover_ms']):.0f} ms, frames drawn for a"
                  f" hover: {r['hover_frames']}")
        if "mouse_lasso_s" in r:
            print(f"{'':>8} mouse lasso (mouse-up → Python): {r['mouse_lasso_s']:.2f} s, {r['mouse_lasso_count']:,} points;"
                  f" in the page: {r.get('browser_times')}")
    print("(medians; lasso→py and hover p50 over --repeats; times on this machine's software WebGL)")
    print(f"load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs")
    if len(results) == 2:
        gl, pl = results
        print(f"ratios GL@{gl['n']:,} / Plotly@{pl['n']:,}: points {gl['n'] / pl['n']:.0f}x, coords→paint "
              f"{gl['coords_to_paint_s'] / pl['coords_to_paint_s']:.2f}x, bytes/point "
              f"{gl['bytes_per_point'] / pl['bytes_per_point']:.3f}x, lasso "
              f"{med(gl['lasso_s']) / med(pl['lasso_s']):.2f}x, hover "
              f"{med(gl['hover_ms']) / max(med(pl['hover_ms']), 1e-3):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
