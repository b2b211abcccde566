"""The Directions tab in a real browser: generate a source, discover directions, drag a slider
and see the edited image change (Playwright driving Debian's Chromium, tiny random UNet)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from conftest import free_port  # noqa: E402
from test_directions import MeanColourJudge  # noqa: E402
from test_hspace import tiny_pipe  # noqa: E402

POINT_POSITION = """(i) => { const d = document.querySelector('#dir-map .la-plot'); const fl = d._fullLayout;
  const tr = d._fullData.find(t => t.name !== 'highlight' && t.name !== 'selected' && Array.from(t.customdata).includes(i));
  const k = Array.from(tr.customdata).indexOf(i);
  const r = d.querySelector('.nsewdrag').getBoundingClientRect();
  return [r.left + fl.xaxis.l2p(tr.x[k]), r.top + fl.yaxis.l2p(tr.y[k])]; }"""
IMG_SRC = "() => { const i = document.querySelector('#dir-image img'); return i ? i.src : ''; }"


@pytest.fixture(scope="module")
def directions_url(tmp_path_factory):
    import gradio as gr

    from app.tabs.directions import build_directions
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), port=free_port())
    backends = Backends(settings)
    backends.directions_pipe = tiny_pipe()
    backends.directions_judge = MeanColourJudge()
    backends.directions_bank_size = 16
    from app.components.scatter import static_paths

    gr.set_static_paths(static_paths() + [str(backends.cache.root / "thumbs")])
    with gr.Blocks() as demo:
        build_directions(backends)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{settings.port}/"
    demo.close()


def drag_slider(page, selector: str, frac_from: float, frac_to: float, steps: int = 6) -> None:
    box = page.locator(f"{selector} input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * frac_from, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * frac_to, y, steps=steps)
    page.mouse.up()


def start(page, url: str) -> None:
    page.goto(url)
    page.fill("#dir-prompt textarea", "a red circle")
    page.click("#dir-generate")
    page.wait_for_function(f"({IMG_SRC})() !== ''", timeout=120_000)
    page.click("#dir-pca")
    page.wait_for_function("document.querySelector('#dir-slot-0 input').value.includes('PC')", timeout=120_000)


def test_dragging_a_slider_changes_the_image(directions_url, browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    try:
        start(page, directions_url)
        page.wait_for_timeout(500)  # the slot's change event re-renders the (unedited) source
        before = page.evaluate(IMG_SRC)
        drag_slider(page, "#dir-strength-0", 0.5, 0.95)
        page.wait_for_function(f"({IMG_SRC})() !== {before!r}", timeout=60_000)
        value = float(page.input_value("#dir-strength-0 input[type=number]"))
        assert value > 3.0  # dragged towards +10σ
        after = page.evaluate(IMG_SRC)
        # the new image really differs: fetch both and compare pixels
        diff = page.evaluate("""async ([a, b]) => {
            const load = async (u) => { const im = new Image(); im.src = u; await im.decode();
              const c = document.createElement('canvas'); c.width = im.width; c.height = im.height;
              const g = c.getContext('2d'); g.drawImage(im, 0, 0); return g.getImageData(0, 0, c.width, c.height).data; };
            const x = await load(a), y = await load(b); let s = 0;
            for (let i = 0; i < x.length; i++) s += Math.abs(x[i] - y[i]);
            return s / x.length; }""", [before, after])
        assert diff > 0.5, diff
        # the Δh half starts at the model's choice (the shipped Shapes config: cond); switching it
        # re-renders the same strengths as a new image
        from backends.shapes.generator import shipped_config

        start_half = page.evaluate("document.querySelector('#dir-half input:checked').value")
        assert start_half == shipped_config().directions_delta_half
        other = "both" if start_half == "cond" else "cond"
        page.click(f"#dir-half label:has-text('{other}')")
        page.wait_for_function(f"({IMG_SRC})() !== {after!r}", timeout=60_000)
        # the h-space map: draw it, click a sample, and it becomes the source (its trajectory is drawn)
        page.click("text=h-space map")
        page.click("#dir-map-draw")
        page.wait_for_selector("#dir-map .la-scatter[data-ready]", timeout=60_000)
        assert page.get_attribute("#dir-map .la-scatter", "data-points") == "16"
        info = page.inner_text("#dir-source-info")
        x, y = page.evaluate(POINT_POSITION, 3)
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#dir-source-info').innerText !== {info!r}", timeout=60_000)
        page.wait_for_function("document.querySelector('#dir-map .la-scatter').dataset.points === '26'",
                               timeout=30_000)  # 16 samples + 10 trajectory steps
    finally:
        ctx.close()


def test_a_text_directions_slider_spans_its_own_range(directions_url, browser):
    """A text direction adds a shift of the conditioning (1 = all of it): its slot's slider spans ±2, not
    the ±10σ of h-space directions, and a strength set beyond that is brought within it."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    try:
        start(page, directions_url)
        assert page.get_attribute("#dir-strength-0 input[type=range]", "max") == "10"
        drag_slider(page, "#dir-strength-0", 0.5, 0.95)
        assert float(page.input_value("#dir-strength-0 input[type=number]")) > 3.0
        page.get_by_text("Prompt pair / text").click()
        page.get_by_role("button", name="Text: E(B) − E(A)").click()
        page.wait_for_function("document.querySelector('#dir-slot-0') !== null", timeout=10_000)
        page.locator("#dir-slot-0 input").click()
        page.get_by_role("option", name="text: a red circle → a blue circle").first.click()
        page.wait_for_function("document.querySelector('#dir-strength-0 input[type=range]').max === '2'",
                               timeout=60_000)
        assert float(page.input_value("#dir-strength-0 input[type=number]")) == 2.0
        assert "text shift" in page.inner_text("#dir-strength-0")
        page.locator("#dir-slot-0 input").click()
        page.get_by_role("option").filter(has_text="PC").first.click()
        page.wait_for_function("document.querySelector('#dir-strength-0 input[type=range]').max === '10'",
                               timeout=60_000)
    finally:
        ctx.close()


def test_a_strip_without_a_strength_says_how_its_range_was_read(directions_url, browser):
    """#17: "Make strip" at strength 0 measures this image's change curve first; the strip spans the
    range read off it and its caption says why (the first clear change, or the break it stays below)."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    try:
        start(page, directions_url)
        page.get_by_text("Strip of frames along one direction").click()
        page.wait_for_function("document.querySelector('#dir-strip-make') !== null", timeout=10_000)
        page.wait_for_timeout(500)  # the accordion mounts its content, the direction menu is filled
        page.click("#dir-strip-make")
        page.wait_for_function("document.querySelector('#dir-strip-note').innerText.includes('Range')",
                               timeout=120_000)
        note = page.inner_text("#dir-strip-note")
        assert "change curve" in note and "ISTD" in note, note
        rng = float(note.split("Range ±")[1].split("σ")[0])
        assert 0.5 <= rng <= 10
        captions = page.locator("#dir-strip .caption-label, #dir-strip figcaption").all_inner_texts()
        assert len(captions) == 11 and captions[-1].startswith(f"+{rng:.1f}"), captions
    finally:
        ctx.close()



def test_the_supervised_section_says_what_each_factors_direction_does_here(directions_url, browser):
    """Beside the Supervised section: the shipped generator's measured note for the chosen factor, updated
    when the factor changes (what supervised_eval --record wrote into generator.json)."""
    from app.services.directions import supervised_note
    from backends.registry import Backends

    notes = {f: supervised_note(Backends(), f) for f in ("colour", "size")}
    if not all(notes.values()):
        pytest.skip("the shipped generator.json has no supervised-direction measurements")
    ctx = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = ctx.new_page()
    try:
        page.goto(directions_url)
        page.get_by_text("Supervised (Shapes factors)").click()
        note = page.locator("#dir-supervised-note")
        note.wait_for(state="visible", timeout=30_000)
        assert "colour → blue" in note.inner_text() and "size" not in note.inner_text()
        page.get_by_label("Factor").click()
        page.get_by_role("option", name="size", exact=True).click()
        page.wait_for_function("document.querySelector('#dir-supervised-note').innerText.includes('size → large')",
                               timeout=30_000)
        assert "colour →" not in note.inner_text()
    finally:
        ctx.close()
