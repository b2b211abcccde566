"""Regions tab: the painting canvas, layout and event wiring of app/services/regions.py (what the tab does).

Paint regions in palette colours, give each a prompt, generate. The canvas is a plain HTML
<canvas> in a ``gr.HTML`` (brush in palette colours only, eraser, clear): ``gr.ImageEditor`` was
tried first, but its ``.input`` event delivers the value from before the latest stroke, so the
preview lagged one stroke behind. After each stroke the canvas goes to Python as a PNG data URL and
the preview of the parsed masks is refreshed; the Generate button reads the canvas itself in the
browser, so no stroke is ever missed. Every action is a named API endpoint: regions_palette,
regions_parse, regions_generate.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard
from app.components.errors import guard as _guard
from app.components.files import uploaded_path
from app.services.regions import (
    EXAMPLE,
    MAX_STEPS,
    METHOD_LABELS,
    RegionsService,
    canvas_from_upload,
    decode_data_url,
    default_guidance,
    encode_data_url,
    example_canvas,
    method_note,
    read_canvas,
)
from backends.errors import InputError
from backends.generative import regions as R
from backends.registry import Backends

DISPLAY_SIZE = 256  # generated 64x64 images are shown enlarged (nearest neighbour)


def _output_dir() -> Path:
    from gradio.utils import get_upload_folder

    d = Path(get_upload_folder()) / "regions"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _save_png(img: np.ndarray) -> str:
    from PIL import Image

    path = _output_dir() / f"{uuid.uuid4().hex}.png"
    Image.fromarray(np.asarray(img, np.uint8)).save(path)
    return str(path)


def _read_image(file) -> np.ndarray:
    """An uploaded image (FileData / dict / path inside Gradio's upload folder) as RGBA uint8."""
    return read_canvas(uploaded_path(file, "canvas"))


def _notes_md(parsed: R.ParsedCanvas | None, extra: list[str] | None = None) -> str:
    if parsed is None:
        return "Paint regions on the canvas with the palette colours."
    lines = []
    if parsed.present:
        lines.append("**Regions:** " + ", ".join(f"{c} ({100 * parsed.areas[c]:.1f}%)" for c in parsed.present))
    else:
        lines.append("**No regions yet.** Paint with one of the palette colours.")
    notes = list(parsed.notes) + [n for n in (extra or []) if n not in parsed.notes]
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines)


CANVAS_TEMPLATE = """
<div class="la-regions" data-first="{first}">
  <div class="la-tools">{swatches}
    <button type="button" class="la-eraser" title="Eraser">eraser</button>
    <label class="la-size-label">brush <input class="la-size" type="range" min="4" max="120" value="36"></label>
    <button type="button" class="la-clear" title="Clear the canvas">clear</button>
  </div>
  <canvas width="{size}" height="{size}"></canvas>
</div>
"""

CANVAS_CSS = """
.la-regions { display: flex; flex-direction: column; gap: 6px; }
.la-regions .la-tools { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; }
.la-regions .la-tools button { border: 2px solid transparent; border-radius: 6px; padding: 2px 8px; cursor: pointer;
  font-size: 13px; background: #eee; }
.la-regions .la-tools button.la-swatch { width: 30px; height: 26px; color: white; }
.la-regions .la-tools button.la-active { border-color: #222; box-shadow: 0 0 0 2px white inset; }
.la-regions canvas { width: 100%; max-width: 512px; aspect-ratio: 1 / 1; border: 1px solid #ccc; border-radius: 4px;
  touch-action: none; cursor: crosshair; background: white; }
.la-regions .la-size-label { font-size: 13px; display: flex; align-items: center; gap: 4px; }
"""

# A plain <canvas>: the brush paints only palette colours; after each stroke the canvas goes to
# Python as a PNG data URL (trigger('stroke')). Setting the component's value to a PNG data URL
# draws it (example layouts). No round trip while painting.
CANVAS_JS = """
const root = element.querySelector('.la-regions');
const canvas = root.querySelector('canvas');
const ctx = canvas.getContext('2d');
let colour = root.dataset.first, size = 36, erasing = false, drawing = false, last = null;
function clear() { ctx.fillStyle = '#ffffff'; ctx.fillRect(0, 0, canvas.width, canvas.height); }
function mark(btn) { root.querySelectorAll('.la-tools button').forEach(b => b.classList.remove('la-active'));
  btn.classList.add('la-active'); }
function send() { trigger('stroke', {png: canvas.toDataURL('image/png'), ts: Date.now()}); }
clear();
root.querySelectorAll('.la-swatch').forEach(b => b.addEventListener('click', () => {
  colour = b.dataset.hex; erasing = false; mark(b); }));
root.querySelector('.la-eraser').addEventListener('click', ev => { erasing = true; mark(ev.currentTarget); });
root.querySelector('.la-clear').addEventListener('click', () => { clear(); send(); });
root.querySelector('.la-size').addEventListener('input', ev => { size = +ev.target.value; });
function pos(ev) { const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height]; }
function seg(p, q) { ctx.strokeStyle = erasing ? '#ffffff' : colour; ctx.lineWidth = size; ctx.lineCap = 'round';
  ctx.lineJoin = 'round'; ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke(); }
canvas.addEventListener('pointerdown', ev => { drawing = true; canvas.setPointerCapture(ev.pointerId);
  last = pos(ev); seg(last, last); });
canvas.addEventListener('pointermove', ev => { if (!drawing) return; const p = pos(ev); seg(last, p); last = p; });
const end = () => { if (!drawing) return; drawing = false; send(); };
canvas.addEventListener('pointerup', end);
canvas.addEventListener('pointercancel', end);
function load() { const v = props.value; if (!v || typeof v !== 'string' || !v.startsWith('data:image/')) return;
  const img = new Image(); img.onload = () => { clear(); ctx.drawImage(img, 0, 0, canvas.width, canvas.height); };
  img.src = v; }
watch('value', load);
load();
const first = root.querySelector('.la-swatch'); if (first) mark(first);
"""

# Before Generate runs, read the canvas itself (so a stroke that has not reached Python yet counts).
READ_CANVAS_JS = """(...args) => { const c = document.querySelector('#regions-canvas canvas');
  args[0] = c ? c.toDataURL('image/png') : ''; return args; }"""


def region_canvas(elem_id: str = "regions-canvas"):
    """The painting canvas (gr.HTML). Events: .stroke (evt._data["png"]: the canvas as a PNG data URL)."""
    swatches = "".join(f'<button type="button" class="la-swatch" data-hex="{R.hex_colour(c)}" title="{c}" '
                       f'aria-label="{c}" style="background:{R.hex_colour(c)}"></button>' for c in R.PALETTE)
    template = CANVAS_TEMPLATE.format(first=R.hex_colour(next(iter(R.PALETTE))), swatches=swatches,
                                      size=R.CANVAS_SIZE)
    return gr.HTML(value="", html_template=template, css_template=CANVAS_CSS, js_on_load=CANVAS_JS,
                   elem_id=elem_id, min_height=560)


def build_regions(backends: Backends):
    svc = RegionsService(backends)
    SERVICES.append(svc)
    colours = list(R.PALETTE)

    # -- handlers ----------------------------------------------------------------------
    def on_stroke(evt: gr.EventData):
        data = (getattr(evt, "_data", None) or {}).get("png", "")
        try:
            parsed = svc.parse(decode_data_url(data))
        except InputError as exc:
            return None, f"**{exc}**"
        return parsed.preview(DISPLAY_SIZE), _notes_md(parsed)

    @_guard
    def on_generate(data, global_prompt, method, seed, steps, guidance, bootstrap, pww_weight, plan, *prompt_values,
                    progress=gr.Progress()):
        prompts = {c: p for c, p in zip(colours, prompt_values) if p and p.strip()}
        progress(0.0, desc="generating")
        res, parsed = svc.generate(decode_data_url(data), prompts, global_prompt, method, int(seed), int(steps),
                                   float(guidance), int(bootstrap), float(pww_weight), plan_objects=bool(plan))
        gallery = [(enlarge(img), f"{METHOD_LABELS[m]} · {res.seconds[m]:.2f} s") for m, img in res.images.items()]
        times = " · ".join(f"{METHOD_LABELS[m]} {s:.2f} s" for m, s in res.seconds.items())
        preview = parsed.preview(DISPLAY_SIZE) if res.plan is None else res.plan
        shown = [] if res.plan is None else ["the preview shows each planned object in full colour inside its "
                                             "painted area (pale)"]
        return gallery, preview, _notes_md(parsed, res.notes + shown) + f"\n\n**Time:** {times}"

    def load_example():
        img = example_canvas()
        prompts = {c: "" for c in colours}
        for colour, _, p in EXAMPLE["regions"]:
            prompts[colour] = p
        parsed = svc.parse(img)
        return [encode_data_url(img), EXAMPLE["prompt"], parsed.preview(DISPLAY_SIZE), _notes_md(parsed)] + \
            [prompts[c] for c in colours]

    def load_upload(file):
        """A painted layout (PNG of palette colours) uploaded from disk onto the canvas. A file that
        is not a usable layout leaves the canvas as it was and says why."""
        try:
            img = canvas_from_upload(_read_image(file))
            parsed = svc.parse(img)
        except InputError as exc:
            return gr.update(), gr.update(), f"**Upload not used: {exc}**"
        return encode_data_url(img), parsed.preview(DISPLAY_SIZE), _notes_md(parsed)

    # -- layout ------------------------------------------------------------------------
    gr.Markdown("Paint regions with the palette colours, give each colour a prompt, and generate. "
                "**SpaText** uses the model's trained region channels; **MultiDiffusion** works with any model "
                "(one denoising pass per region, blended by the masks); **paint-with-words** boosts each region's "
                "words in the cross-attention inside its region. Where the model's world has one (Shapes), the "
                "**object planner** turns each painted area whose prompt names a shape into that shape, fitted "
                "inside the area: the area says where, the prompt says what.")
    with gr.Row():
        with gr.Column(scale=3, min_width=360):
            canvas = region_canvas()
            canvas_data = gr.Textbox(visible=False)
            with gr.Row():
                example_btn = gr.Button("Load an example layout", size="sm", elem_id="regions-example")
                upload_btn = gr.UploadButton("Load a painted layout (PNG)", file_types=["image"], size="sm",
                                             elem_id="regions-upload")
        with gr.Column(scale=2, min_width=300):
            global_prompt = gr.Textbox(label="Global prompt", placeholder="on a black background",
                                       elem_id="regions-global")
            prompt_boxes = [gr.Textbox(label=f"{c} region", placeholder=f"what goes in the {c} region",
                                       elem_id=f"regions-prompt-{c}", max_lines=1) for c in colours]
            spec = getattr(backends, "generator_spec", None)
            first = "spatext" if spec is None or spec().kind == "shapes" else "multidiffusion"  # SD has no SpaText map
            method = gr.Radio([(v, k) for k, v in METHOD_LABELS.items()], value=first, label="Method",
                              elem_id="regions-method")
            has_planner = svc.planner() is not None
            plan = gr.Checkbox(has_planner, visible=has_planner, elem_id="regions-plan",
                               label="Object planner: draw the shape each prompt names inside its area",
                               info="off: the model gets the painted areas as they are, and tends to fill their outline")
            method_info = gr.Markdown(method_note(backends, first, has_planner), elem_id="regions-method-note")
            with gr.Accordion("Settings", open=False):
                seed = gr.Number(0, precision=0, minimum=0, label="Seed")
                steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Steps")
                guidance = gr.Slider(1.0, 15.0, value=default_guidance(backends, first), step=0.5,
                                     label="Guidance scale")
                bootstrap = gr.Slider(-1, MAX_STEPS, value=-1, step=1,
                                      label="MultiDiffusion bootstrapping steps (-1: 20% of the steps)")
                pww_weight = gr.Slider(0.0, 2.0, value=0.4, step=0.05, label="Paint-with-words weight")
            gen_btn = gr.Button("Generate", variant="primary", elem_id="regions-generate")
        with gr.Column(scale=2, min_width=280):
            preview = gr.Image(label="Regions as the model gets them", interactive=False, height=260,
                               elem_id="regions-preview", buttons=["download", "fullscreen"])  # no share-to-Hub
            notes = gr.Markdown(_notes_md(None), elem_id="regions-notes")
            gallery = gr.Gallery(label="Result", columns=3, height="auto", object_fit="contain",  # one image: full width
                                 elem_id="regions-result")

    # -- wiring ------------------------------------------------------------------------
    canvas.stroke(on_stroke, None, [preview, notes], api_visibility="undocumented", queue=False,
                  trigger_mode="always_last")
    gen_btn.click(on_generate, [canvas_data, global_prompt, method, seed, steps, guidance, bootstrap, pww_weight, plan]
                  + prompt_boxes, [gallery, preview, notes], js=READ_CANVAS_JS, api_visibility="undocumented",
                  concurrency_id="model-regions", concurrency_limit=1)
    method.change(lambda m, p: method_note(backends, m, p), [method, plan], method_info,
                  api_visibility="undocumented", queue=False)
    plan.change(lambda m, p: method_note(backends, m, p), [method, plan], method_info,
                api_visibility="undocumented", queue=False)
    example_btn.click(load_example, None, [canvas, global_prompt, preview, notes] + prompt_boxes,
                      api_visibility="undocumented", queue=False)
    upload_btn.upload(load_upload, upload_btn, [canvas, preview, notes], api_visibility="undocumented")

    _register_api(svc)
    return svc


SERVICES: list[RegionsService] = []  # the services built in this process (tests pick a model through them)


def _register_api(svc: RegionsService):
    def regions_palette() -> list[dict]:
        """The region colours: [{"colour": "red", "hex": "#e6194b"}, ...]. Paint regions in these."""
        return [{"colour": c, "hex": R.hex_colour(c)} for c in R.PALETTE]

    def regions_parse(canvas: FileData, min_area_frac: float = R.MIN_AREA_FRAC) -> tuple[FileData, dict]:
        """Parse a painted canvas (PNG, palette colours on white or transparent): a preview of the
        masks and {"regions": [{"colour", "hex", "area"}], "notes": [...]}."""
        parsed = svc.parse(_read_image(canvas), min_area_frac)
        return FileData(path=_save_png(parsed.preview(DISPLAY_SIZE))), svc.summary(parsed)

    def regions_generate(canvas: FileData, prompts: dict, global_prompt: str = "", method: str = "spatext",
                         seed: int = 0, steps: int = 20, guidance: float = -1.0, bootstrap_steps: int = -1,
                         pww_weight: float = 0.4, model: str = "", plan_objects: bool = True) -> tuple[list[FileData], dict]:
        """Generate from a painted canvas (the masks as an image) and {colour: prompt}.

        method: spatext | multidiffusion | paint_with_words | compare (all, same seed).
        guidance < 0: the model's default (Shapes with a SpaText map: its region-map guidance, 3.5).
        plan_objects: where the model has an object planner (Shapes), each area becomes the shape its
        prompt names, fitted inside it, before generating (the notes say what was planned).
        Returns one PNG per method (the generator's size) and {"methods", "seconds", "regions", "notes"}.
        """
        res, parsed = svc.generate(_read_image(canvas), prompts, global_prompt, method, seed, steps, guidance,
                                   bootstrap_steps, pww_weight, model or None, plan_objects)
        files = [FileData(path=_save_png(img)) for img in res.images.values()]
        info = svc.summary(parsed)
        info.update(methods=list(res.images), seconds={k: round(v, 4) for k, v in res.seconds.items()},
                    notes=list(res.notes))
        return files, info

    for fn in (regions_palette, regions_parse, regions_generate):
        gr.api(api_guard(fn), api_name=fn.__name__, concurrency_id="model-regions" if fn is regions_generate else None,
               concurrency_limit=1 if fn is regions_generate else "default")
