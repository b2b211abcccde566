"""The Stitching tab through its named API endpoints, against a launched app (what gradio_client users do)."""
import json

import numpy as np
import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(atlas_app):
    import torch

    torch.set_num_threads(1)
    url, _ = atlas_app
    return Client(url, verbose=False)


ENDPOINTS = ("stitching_spaces", "stitching_anchors", "stitching_compare", "stitching_maps", "stitching_table",
             "stitching_classify", "stitching_classify_image", "stitching_decode")


def test_api_lists_every_stitching_action(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ENDPOINTS:
        assert f"/{name}" in names


def test_spaces_registry_names_worlds_and_reasons(client):
    spaces = {s["name"]: s for s in client.predict(api_name="/stitching_spaces")}
    assert spaces["blobs"]["world"] == spaces["blobs-rotated"]["world"] == "blobs"
    assert spaces["blobs"]["unavailable"] is None
    assert "corpus:digits" in spaces
    assert {"shapes-cnn", "shapes-vit", "openclip"} <= set(spaces)


def test_compare_rotated_spaces_relative_invariant_absolute_not(client):
    out = client.predict("blobs", "blobs-rotated", 100, "kmeans", 10, "cosine", "none", 0, "label", None,
                         api_name="/stitching_compare")
    assert out["n_anchors"] == 100 and out["n_items"] == 1500
    assert out["relative"]["jaccard"] > 0.95 and out["relative"]["mrr"] > 0.99
    assert out["absolute"]["jaccard"] < 0.1 and out["absolute"]["mrr"] < 0.1
    assert out["procrustes"]["mrr"] > 0.99
    anchors = client.predict("blobs", "blobs-rotated", 12, "stratified", "label", 0, api_name="/stitching_anchors")
    assert len(anchors) == 12 and len(set(anchors)) == 12
    explicit = client.predict("blobs", "blobs-rotated", 300, "random", 5, "cosine", "none", 0, "", anchors,
                              api_name="/stitching_compare")
    assert explicit["n_anchors"] == 12 and explicit["anchor_ids"] == anchors


def test_maps_have_both_spaces_in_item_order(client):
    m = client.predict("blobs", "blobs-rotated", "relative", "pca", 50, "random", 0, api_name="/stitching_maps")
    assert len(m["ids"]) == 1500 and len(m["a"]["x"]) == len(m["b"]["y"]) == 1500
    # relative maps share one PCA basis, so the maps of a rotated copy coincide point for point
    a, b = np.array([m["a"]["x"], m["a"]["y"]]).T, np.array([m["b"]["x"], m["b"]["y"]]).T
    assert np.abs(a - b).max() < 0.05
    m = client.predict("blobs", "blobs-rotated", "absolute", "pca", 50, "random", 0, api_name="/stitching_maps")
    assert len(m["a"]["x"]) == 1500


def test_table_classify_and_upload_on_digits(client, tmp_path):
    t = client.predict("digits-map-a", "digits-map-b", "label", 300, "random", "cosine", "none", 0,
                       api_name="/stitching_table")
    rows = {(r["encoder"][0], r["head"][0]): r for r in t["rows"]}
    assert rows["A", "A"]["relative"] > 0.9
    assert rows["A", "B"]["relative"] > 0.7 and rows["A", "B"]["absolute"] < t["chance"] + 0.15
    r = client.predict("digits-map-a", "digits-map-b", "digit-0000", "B", "A", "relative", "label", 300, "random", 0,
                       api_name="/stitching_classify")
    assert r["prediction"] == r["true"] == "0" and r["encoder"] == "digits-map-b" and r["head"] == "digits-map-a"
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-3

    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    hits = 0
    for i in range(1, 9):  # an uploaded image is classified exactly as the same corpus item
        img = (d.images[i] / 16 * 255).astype(np.uint8)
        Image.fromarray(np.kron(img, np.ones((4, 4), np.uint8))).save(tmp_path / f"d{i}.png")
        out = client.predict("digits-map-a", "digits-map-b", handle_file(str(tmp_path / f"d{i}.png")), "B", "A",
                             "relative", "label", 300, "random", 0, api_name="/stitching_classify_image")
        same = client.predict("digits-map-a", "digits-map-b", f"digit-{i:04d}", "B", "A", "relative", "label", 300,
                              "random", 0, api_name="/stitching_classify")
        assert out["prediction"] == same["prediction"]
        hits += out["prediction"] == str(d.target[i])
    assert hits >= 6
    png = client.predict("digits-map-a", "digits-map-b", "digit-0003", "B", "A", 300, "random", 0,
                         api_name="/stitching_decode")
    assert np.asarray(Image.open(png)).shape[:2] == (8, 8)


def test_bad_input_gets_a_message_and_the_server_keeps_serving(client, tmp_path):
    with pytest.raises(Exception, match="at least 2 anchors"):
        client.predict("blobs", "blobs-rotated", 1, "random", 10, "cosine", "none", 0, "", None,
                       api_name="/stitching_compare")
    with pytest.raises(Exception, match="'nope' is not in the corpus"):
        client.predict("blobs", "blobs-rotated", 300, "random", 10, "cosine", "none", 0, "", ["blob-0001", "nope"],
                       api_name="/stitching_compare")
    with pytest.raises(Exception, match="Unknown space"):
        client.predict("blobs", "nope", 10, "random", 10, "cosine", "none", 0, "", None, api_name="/stitching_compare")
    with pytest.raises(Exception, match="same world"):
        client.predict("blobs", "digits-map-a", 10, "random", 10, "cosine", "none", 0, "", None,
                       api_name="/stitching_compare")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(40, 6)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.normal(size=(30, 6)).astype(np.float32))
    ka = client.predict(handle_file(str(tmp_path / "a.npy")), api_name="/atlas_upload")
    kb = client.predict(handle_file(str(tmp_path / "b.npy")), api_name="/atlas_upload")
    with pytest.raises(Exception, match="has 40 items but space B .* has 30"):
        client.predict(f"corpus:{ka}", f"corpus:{kb}", 10, "random", 5, "cosine", "none", 0, "", None,
                       api_name="/stitching_compare")
    with pytest.raises(Exception, match="no images to decode"):
        client.predict("blobs", "blobs-rotated", "label", 20, "random", "cosine", "none", 0, True,
                       api_name="/stitching_table")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="could not read the file as an image"):
        client.predict("digits-map-a", "digits-map-b", handle_file(str(tmp_path / "bad.png")), "B", "A", "relative",
                       "label", 300, "random", 0, api_name="/stitching_classify_image")
    assert client.predict(api_name="/stitching_spaces")


def test_linked_maps_mark_the_same_items_in_both(atlas_app):
    from app.services.stitching import StitchingService

    _, backends = atlas_app
    svc = StitchingService(backends)
    p = svc.params("blobs", "blobs-rotated", n_anchors=30)
    a, b = svc.payloads(p, "relative", "pca", "label", selected=[3, 5, 8], highlight=[7])
    pa, pb = json.loads(a), json.loads(b)
    assert pa["selected"] == pb["selected"] == [3, 5, 8] and pa["highlight"] == pb["highlight"] == [7]
    assert pa["ids"] == pb["ids"] and pa["title"].startswith("A: blobs") and pb["title"].startswith("B: blobs-rotated")


def test_shapes_encoders_compare_through_the_api(client):
    spaces = {s["name"]: s for s in client.predict(api_name="/stitching_spaces")}
    if spaces["shapes-cnn"]["unavailable"] or spaces["shapes-vit"]["unavailable"]:
        pytest.skip(f"Shapes encoder weights are absent from assets/shapes/: {spaces['shapes-cnn']['unavailable']}")
    out = client.predict("shapes-cnn", "shapes-vit", 300, "random", 10, "cosine", "none", 0, "shape", None,
                         api_name="/stitching_compare")
    assert out["dims"] == [128, 128]
    assert out["relative"]["jaccard"] > out["absolute"]["jaccard"] + 0.1
    assert out["relative"]["mrr"] > out["absolute"]["mrr"]


# ---------------------------------------------------------------------------------------
# In a real browser: the two maps are linked


FIRST_POINT = """(sel) => { const d = document.querySelector(sel + ' .la-plot'); const fl = d._fullLayout;
  const tr = d._fullData[0]; const r = d.querySelector('.nsewdrag').getBoundingClientRect();
  return [r.left + fl.xaxis.l2p(tr.x[0]), r.top + fl.yaxis.l2p(tr.y[0]), tr.customdata[0]]; }"""
TRACE_INDICES = """([sel, name]) => { const d = document.querySelector(sel + ' .la-plot');
  const t = (d.data || []).find(t => t.name === name); return t ? t.customdata : []; }"""


def compare_digits_pair(page, url: str) -> None:
    """Open the Stitching tab, pick the digits-map-a / digits-map-b pair and press Compare."""
    page.goto(url)
    page.get_by_role("tab", name="Stitching").click()
    page.wait_for_function("document.querySelector('#st-info') && "
                           "document.querySelector('#st-info').innerText.includes('items')", timeout=120_000)
    for sel, name in (("#st-space-a", "digits-map-a"), ("#st-space-b", "digits-map-b")):
        box = page.locator(f"{sel} input")
        box.click()
        box.fill(name)
        box.press("Enter")
    page.wait_for_function("document.querySelector('#st-info').innerText.includes('B: digits-map-b')",
                           timeout=120_000)
    page.click("#st-compare")


@pytest.mark.browser
def test_browser_click_and_lasso_in_one_map_mark_the_same_items_in_the_other(atlas_app, browser):
    url, _ = atlas_app
    ctx = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = ctx.new_page()
    try:
        compare_digits_pair(page, url)  # heads cached above
        for sel in ("#st-map-a", "#st-map-b"):
            page.wait_for_selector(f"{sel} .la-scatter[data-ready]", timeout=120_000)
        assert page.get_attribute("#st-map-a .la-scatter", "data-points") == \
            page.get_attribute("#st-map-b .la-scatter", "data-points")
        x, y, idx = page.evaluate(FIRST_POINT, "#st-map-a")
        page.mouse.click(x, y)
        page.wait_for_function(f"({TRACE_INDICES})(['#st-map-b', 'highlight']).includes({idx})", timeout=60_000)
        assert idx in page.evaluate(TRACE_INDICES, ["#st-map-a", "highlight"])
        page.wait_for_function("document.querySelector('#st-demo-md').innerText.includes('read by')",
                               timeout=120_000)  # the clicked item is classified by the other model's head
        box = page.locator("#st-map-b .nsewdrag").bounding_box()
        page.mouse.move(box["x"] + 5, box["y"] + 5)
        page.mouse.down()
        for px, py in [(box["width"] / 2, 5), (box["width"] / 2, box["height"] - 5), (5, box["height"] - 5), (5, 5)]:
            page.mouse.move(box["x"] + px, box["y"] + py, steps=4)
        page.mouse.up()
        page.wait_for_function("document.querySelector('#st-link').innerText.includes('selected')", timeout=60_000)
        n = int(page.inner_text("#st-link").split()[0].replace(",", ""))
        page.wait_for_function(f"({TRACE_INDICES})(['#st-map-a', 'selected']).length === {n}", timeout=30_000)
        assert n > 10
        assert sorted(page.evaluate(TRACE_INDICES, ["#st-map-a", "selected"])) == \
            sorted(page.evaluate(TRACE_INDICES, ["#st-map-b", "selected"]))
    finally:
        ctx.close()


@pytest.mark.browser
def test_browser_large_spaces_are_drawn_with_regl_and_a_lasso_links_them(atlas_app, browser, monkeypatch):
    """With GL_THRESHOLD at 0 the digits pair (1,797 items) is drawn as a large `corpus:` space would be:
    both maps are regl maps, and a lasso over all of B (sent as a bitmask) selects the same items in A."""
    from app.components import scatter_gl

    monkeypatch.setattr(scatter_gl, "GL_THRESHOLD", 0)
    url, _ = atlas_app
    ctx = browser.new_context(viewport={"width": 1600, "height": 1100})
    page = ctx.new_page()
    try:
        compare_digits_pair(page, url)
        for sel in ("#st-map-a", "#st-map-b"):
            page.wait_for_selector(f"{sel} .la-scatter[data-gl-ready]", timeout=120_000)
            assert page.get_attribute(f"{sel} .la-scatter", "data-points") == "1797"
        page.evaluate("""() => document.querySelector('#st-map-b .la-scatter').__laGl.plot.lassoSelect(
            [[-2, -2], [2, -2], [2, 2], [-2, 2]], {isGl: true})""")
        page.wait_for_function("document.querySelector('#st-link').innerText.includes('1,797 items selected')",
                               timeout=60_000)
        page.wait_for_function("document.querySelector('#st-map-a .la-scatter').__laGl.plot"
                               ".get('selectedPoints').length === 1797", timeout=60_000)
    finally:
        ctx.close()


def test_picking_another_pair_redoes_the_comparison_and_clears_the_table(tmp_path):
    """After Compare, choosing other spaces must not leave the previous pair's numbers on the page."""
    from app.main import create_app
    from app.services.stitching import TABLE_COLUMNS
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    demo = create_app(settings, Backends(settings))
    f = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_new_pair"][0]  # one per dropdown
    args = ["digits-map-a", "digits-map-b", 50, "random", "label", 0, "cosine", "none", 10, "", "relative", "pca",
            "label"]
    def silent(*a, **k):
        return None

    # nothing compared yet: only the stitching table is reset, with a note
    state, *rest, table, note = f.fn(*args, None, progress=silent)
    assert state is None and list(table.columns) == list(TABLE_COLUMNS) and len(table) == 0
    assert "digits-map-a vs digits-map-b" in note
    # a comparison was on screen (for another pair): it is redone for the new one
    state, metrics, _note, map_a, map_b, table, _ = f.fn(*args, {"space_a": "old"}, progress=silent)
    assert (state["space_a"], state["space_b"]) == ("digits-map-a", "digits-map-b")
    assert len(metrics) > 0 and map_a and map_b and len(table) == 0
