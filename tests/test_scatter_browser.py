"""The shared map component in a real browser: colours as named, no links off the machine."""

import numpy as np
import pytest

from browser_pages import open_page
from conftest import free_port

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def map_page_url():
    import gradio as gr

    from app.components.scatter import scatter_map, scatter_payload, static_paths

    gr.set_static_paths(static_paths())
    xy = np.random.default_rng(0).normal(size=(60, 2))
    payload = scatter_payload(xy, ids=[f"i{i}" for i in range(60)], color=["red", "cyan", "yellow"] * 20,
                              color_name="colour", title="A map with a title")
    with gr.Blocks() as demo:
        scatter_map(height=400, elem_id="m", value=payload)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_named_colours_and_a_mode_bar_without_cloud_links(map_page_url, browser):
    with open_page(browser, map_page_url, ready="#m .la-scatter[data-ready]") as page:
        colours = page.evaluate("() => Object.fromEntries(document.querySelector('#m .la-plot').data"
                                ".filter(t => t.marker && t.name).map(t => [t.name, t.marker.color]))")
        from app.components.colours import named_colour

        assert colours == {c: named_colour(c) for c in ("cyan", "red", "yellow")}, colours
        page.hover("#m .la-plot")
        page.wait_for_selector("#m .modebar", state="attached")
        titles = page.evaluate("() => Array.from(document.querySelectorAll('#m .modebar-btn'))"
                               ".map(b => b.getAttribute('data-title') || '')")
        assert titles and not any(("share" in t.lower() or "cloud" in t.lower() or "chart studio" in t.lower()
                                   or "png" in t.lower()) for t in titles), titles
        links = page.evaluate("() => Array.from(document.querySelectorAll('#m a[href]')).map(a => a.href)")
        assert all(h.startswith("http://127.0.0.1") or h.startswith("javascript") for h in links), links
        # the mode bar runs down the right edge, clear of the title
        box = page.evaluate("() => { const t = document.querySelector('#m .gtitle').getBoundingClientRect();"
                            " const m = document.querySelector('#m .modebar').getBoundingClientRect();"
                            " return [t.left, t.right, t.top, t.bottom, m.left, m.right, m.top, m.bottom]; }")
        tl, tr, tt, tb, ml, mr, mt, mb = box
        assert tr <= ml or mb <= tt or mt >= tb, box
