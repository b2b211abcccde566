"""Directions tab: the layout and event wiring of app/services/directions.py (what the tab does).

Drag an image along h-space directions of the diffusion model, live. Per-user state is one small
dict {"source": key}; sources and directions live in the (shared) service.
"""
from __future__ import annotations

import functools
import math
import time

import gradio as gr
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.files import uploaded_path
from app.components.tables import empty_table
from app.services.directions import (
    DISENTANGLEMENT_COLUMNS,
    LIBRARY_COLUMNS,
    SLIDER_RANGE,
    DirectionsService,
    half_defaults,
    parse_sample_ids,
    supervised_note,
    to_data_url,
)
from backends.errors import InputError
from backends.registry import Backends

N_SLOTS = 4  # direction sliders shown at once


# The library table's headers on the page: words that can wrap ("default_strength" could only break
# inside the word), so that all seven columns fit the tab's right-hand column; the API keeps LIBRARY_COLUMNS.
SHOWN_HEADERS = {"default_strength": "strength (σ)", "disentanglement": "disentangle\u00adment", "istd": "ISTD"}


def shown_library(table):
    """The library DataFrame with the page's headers."""
    return table.rename(columns=SHOWN_HEADERS)


def build_directions(backends: Backends):
    from app.components.scatter import scatter_map

    svc = DirectionsService(backends)
    record_default, delta_default = half_defaults(backends)

    def info_md(d: dict) -> str:
        s = f"**Source** `{d['source']}` · {d['kind']} · {d['steps']} steps · η={d['eta']:g}"
        if "psnr" in d:
            s += f"\n\nReconstruction PSNR **{d['psnr']} dB** (codec round trip: {d['codec_psnr']} dB)"
        if d.get("notes"):
            s += "\n\nInput: " + "; ".join(d["notes"])
        return s

    def slot_updates():
        ch = svc.choices()
        return [gr.update(choices=ch) for _ in range(N_SLOTS)]

    def lib_outputs(selected: list[str] | None = None):
        """Table, strip / judge / orthogonal-to menus and the slots after the library changed; new
        directions go into the slots, and the first into the strip and judge menus (so "Make strip"
        or "Judge" right after adding one works on it)."""
        ch = svc.choices()
        sel = list(selected or [])
        slots = [gr.update(choices=ch, value=sel[i]) if i < len(sel) else gr.update(choices=ch) for i in range(N_SLOTS)]
        def newest():  # a dict per output: Gradio consumes each update it applies
            return gr.update(choices=ch, value=sel[0]) if sel else gr.update(choices=ch)

        return [shown_library(svc.library_table()), newest(), newest(), gr.update(choices=ch)] + slots

    # -- handlers ----------------------------------------------------------------------
    @guard
    def ui_prompt(prompt, seed, steps, eta, guidance, layer, progress=gr.Progress()):
        progress(0.0, desc="sampling the source and recording its h")
        key, d = svc.source_from_prompt(prompt, seed, steps, eta, guidance, layer)
        img = enlarge(svc.source(key).images[0])
        return ({"source": key}, img, img, info_md(d)) + tuple(gr.update(value=0) for _ in range(N_SLOTS))

    @guard
    def ui_upload(image, prompt, method, steps, eta, guidance, layer, progress=gr.Progress()):
        progress(0.0, desc="inverting the image (DDIM), then recording its h")
        key, d = svc.source_from_image(image, prompt, method, steps, eta, guidance, layer)
        t = svc.source(key)
        return ({"source": key}, enlarge(t.original[0]), enlarge(t.images[0]), info_md(d)) + \
            tuple(gr.update(value=0) for _ in range(N_SLOTS))

    @guard
    def ui_item(corpus, item_id, steps, layer, progress=gr.Progress()):
        progress(0.0, desc="making the item a source (regenerated or inverted)")
        key, d = svc.source_from_item(corpus, item_id, steps, layer=layer)
        t = svc.source(key)
        src = t.original[0] if t.original is not None else t.images[0]
        return ({"source": key}, enlarge(src), enlarge(t.images[0]), info_md(d)) + \
            tuple(gr.update(value=0) for _ in range(N_SLOTS))

    def ui_edit(state, t0, t1, asym, half, *slots):
        if not state or not state.get("source"):
            return gr.skip()
        ids, ss = list(slots[:N_SLOTS]), list(slots[N_SLOTS:])
        pairs = [(i, s) for i, s in zip(ids, ss) if i]
        try:
            return enlarge(svc.edit(state["source"], [i for i, _ in pairs], [s for _, s in pairs], t0, t1, asym, half))
        except InputError as exc:
            raise gr.Error(str(exc)) from None

    @guard
    def ui_pca(n, k, layer, rhalf, progress=gr.Progress()):
        ids = svc.discover_pca(n, k, progress=lambda f, m: progress(f, desc=m), layer=layer, half=rhalf)
        return [f"Found {len(ids)} PCA directions over {int(n)} samples."] + lib_outputs(ids)

    @guard
    def ui_noiseclr(k, steps, n, progress=gr.Progress()):
        t = time.perf_counter()
        ids = svc.noiseclr(k, steps, n_samples=n, progress=lambda f, m: progress(f, desc=m))
        d = svc.get(ids[0])
        return [f"Learned {len(ids)} NoiseCLR directions from {d.meta.get('n_images')} generated samples in "
                f"{time.perf_counter() - t:.0f} s (loss {d.meta.get('first_loss')} → {d.meta.get('final_loss')}); "
                "text directions: strength 1 adds the learned token."] + lib_outputs(ids)

    @guard
    def ui_supervised(factor, value, from_value, ortho, labels, layer, rhalf, progress=gr.Progress()):
        did = svc.supervised(factor, value, from_value or "", ortho or [], labels, layer=layer, half=rhalf,
                             progress=lambda f, m: progress(f, desc=m))
        return [f"Added **{svc.get(did).name}** (default strength {svc.get(did).default_strength:.2f}σ)."] + lib_outputs([did])

    @guard
    def ui_groups(a, b, layer, rhalf, progress=gr.Progress()):
        progress(0.0, desc="the two groups' mean h")
        did = svc.groups(parse_sample_ids(b, "group B"), parse_sample_ids(a, "group A"),
                         name=f"group ({a.strip()[:20]}) → ({b.strip()[:20]})", layer=layer, half=rhalf)
        return [f"Added **{svc.get(did).name}**."] + lib_outputs([did])

    @guard
    def ui_pair(a, b, n, layer, progress=gr.Progress()):
        progress(0.0, desc=f"sampling {int(n or 0)} seeds of each prompt")
        did = svc.prompt_pair(a, b, n, layer)
        return [f"Added **{svc.get(did).name}**."] + lib_outputs([did])

    @guard
    def ui_text(a, b):
        did = svc.text(a, b)
        return [f"Added text direction **{svc.get(did).name}** (strength 1 = prompt B)."] + lib_outputs([did])

    @guard
    def ui_jacobian(state, step, k, region, progress=gr.Progress()):
        if not state or not state.get("source"):
            raise InputError("start from a prompt, an Atlas item or an image first")
        progress(0.0, desc="the Jacobian's top singular vectors (power iteration)")
        ids = svc.image_specific(state["source"], step, k, region)
        return [f"Added {len(ids)} image-specific directions."] + lib_outputs(ids)

    @guard
    def ui_import(file):
        if file is None:
            raise InputError("no file was uploaded")
        ids = svc.import_file(file if isinstance(file, str) else file.name)
        return [f"Imported {len(ids)} directions."] + lib_outputs(ids)

    @guard
    def ui_export(ids):
        return svc.export(ids or [])

    @guard
    def ui_strip(state, did, strength, frames, t0, t1, half):
        if not state or not state.get("source"):
            raise InputError("start from a prompt, an Atlas item or an image first")
        if not did:
            raise InputError("choose a direction for the strip")
        ss, imgs, ist, chosen = svc.strip(state["source"], did, strength if strength else None, frames, t0, t1, half)
        unit = "" if svc.get(did).kind == "text" else "σ"
        md = f"Frames at the strengths under them{' (in σ)' if unit else ' (shares of the text shift)'}. " \
             f"ISTD (smoothness; lower is smoother): **{ist:.4f}**"
        if chosen:
            md = f"Range **±{chosen['range']:g}{unit}**, read off this image's change curve: {chosen['reason']}. " + md
        return [(enlarge(im, 128), f"{s:+.1f}") for s, im in zip(ss, imgs)], md

    @guard
    def ui_judge(did, n, progress=gr.Progress()):
        if not did:
            raise InputError("choose a direction to judge")
        note = ""
        rep = svc.judge_direction(did, n, progress=lambda f, m: progress(f, desc=m))
        ch = ", ".join(f"{k} {v:.0%}" for k, v in rep["changes"].items())
        istd = rep.get("istd", float("nan"))
        md = (f"**{rep['name']}** — changed: {ch}; disentanglement **{rep['disentanglement']:.2f}** "
              f"(share of the change in {rep['dominant']})"
              + (f"; ISTD {istd:.4f}" if math.isfinite(istd) else "") + note)
        return [md] + lib_outputs()

    @guard
    def ui_disentanglement(n, layer, rhalf, progress=gr.Progress()):
        table = svc.disentanglement(None, n, layer, rhalf, progress=lambda f, m: progress(f, desc=m))
        return table, table.attrs.get("note", "")

    @guard
    def ui_atlas(step, n, layer, rhalf, progress=gr.Progress()):
        key = svc.to_atlas(step, n, layer, rhalf, progress=lambda f, m: progress(f, desc=m))
        return f"Added corpus `{key}` to the Atlas (pick it in the Atlas tab's corpus menu)."

    # -- layout ------------------------------------------------------------------------
    state = gr.State({})
    gr.Markdown("Move an image along directions of the diffusion model's semantic latent space (h-space: the "
                "UNet bottleneck). Start from a prompt, an Atlas item or your own image, add directions, drag.")
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            with gr.Tab("Prompt"):
                prompt = gr.Textbox(value="a red circle in the center", label="Prompt", elem_id="dir-prompt")
                seed = gr.Number(value=0, precision=0, label="Seed")
                gen_btn = gr.Button("Generate", variant="primary", elem_id="dir-generate")
            with gr.Tab("Atlas item"):
                item_corpus = gr.Textbox(value="hspace", label="Corpus")
                item_id = gr.Textbox(label="Item id", placeholder="h-0")
                item_btn = gr.Button("Start from item")
            with gr.Tab("Upload"):
                upload = gr.Image(type="pil", label="Your image (converted to RGB, centre-cropped, resized)",
                                  image_mode=None, height=160)
                up_prompt = gr.Textbox(label="Prompt describing it (optional)")
                method = gr.Radio(["ddpm", "ddim"], value="ddpm", label="Inversion",
                                  info="ddpm: DDPM-noise inversion (exact); ddim: DDIM inversion")
                up_btn = gr.Button("Invert")
            with gr.Accordion("Sampler", open=False):
                steps = gr.Slider(2, 50, value=10, step=1, label="Steps")
                eta = gr.Slider(0, 1, value=1.0, step=0.05, label="η (DDIM noise)")
                guidance = gr.Slider(-1, 15, value=-1, step=0.5, label="Guidance (−1: default)",
                                     info="the model's for prompts and DDPM-noise inversion; 1 for DDIM inversion")
                layer = gr.Dropdown(["mid_block"] + [f"up_blocks.{i}" for i in range(3)], value="mid_block",
                                    allow_custom_value=True, label="Layer",
                                    info="mid_block: h-space (Haas et al.); up blocks: later layers, for models "
                                         "whose decoder leans on skip connections")
                rhalf = gr.Radio(["uncond", "cond"], value=record_default, label="h of the samples read from the guidance half",
                                 info="for PCA, supervised directions, the h-space map and the Atlas: uncond sees the "
                                      "emerging image; cond also sees the prompt", elem_id="dir-record-half")
            src_info = gr.Markdown(elem_id="dir-source-info")
            src_img = gr.Image(label="Source", height=160, interactive=False, elem_id="dir-source", buttons=["download", "fullscreen"])
        with gr.Column(scale=2, min_width=360):
            out_img = gr.Image(label="Edited", height=320, interactive=False, elem_id="dir-image", buttons=["download", "fullscreen"])
            slot_dd, slot_s = [], []
            for i in range(N_SLOTS):
                with gr.Row():
                    slot_dd.append(gr.Dropdown(choices=[], value=None, label=f"Direction {i + 1}", scale=2,
                                               elem_id=f"dir-slot-{i}"))
                    slot_s.append(gr.Slider(-SLIDER_RANGE, SLIDER_RANGE, value=0, step=0.1, label="strength (σ)",
                                            scale=3, elem_id=f"dir-strength-{i}"))
            with gr.Row():
                t0 = gr.Slider(0, 1, value=0, step=0.05, label="edit from (fraction of steps)")
                t1 = gr.Slider(0, 1, value=1, step=0.05, label="edit until")
            # a row of their own under the sliders: squeezed in beside them, the checkbox's label was cut
            # off and its info text wrapped one word per line; min_width wraps them below each other instead
            with gr.Row(equal_height=True):
                asym = gr.Checkbox(value=False, label="asymmetric (Asyrp: stronger)", min_width=240,
                                   info="x̂0 from the edited prediction, the noise direction from the unedited one")
                half = gr.Radio(["both", "cond"], value=delta_default, label="Δh goes to the guidance half",
                                info="both: like an unguided model; cond: the guidance scale multiplies the edit",
                                min_width=240, elem_id="dir-half")
            with gr.Accordion("Strip of frames along one direction", open=False):
                with gr.Row():
                    strip_dd = gr.Dropdown(choices=[], label="Direction")
                    strip_s = gr.Number(value=0, label="± strength (0: read off this image's change curve)")
                    strip_n = gr.Slider(3, 21, value=11, step=1, label="Frames")
                strip_btn = gr.Button("Make strip", elem_id="dir-strip-make")
                # two rows of 6: in one row of 11 the frames were 30 px wide in this column
                strip = gr.Gallery(label="Strip", columns=6, height=250, object_fit="contain", fit_columns=False,
                                   elem_id="dir-strip")
                strip_md = gr.Markdown(elem_id="dir-strip-note")
            with gr.Accordion("h-space map (click a sample to start from it)", open=False):
                with gr.Row():
                    map_step = gr.Slider(0, 9, value=5, step=1, label="Step")
                    map_x = gr.Dropdown(choices=["PCA 1"], value="PCA 1", allow_custom_value=True, label="x axis")
                    map_y = gr.Dropdown(choices=["PCA 2"], value="PCA 2", allow_custom_value=True, label="y axis")
                    map_color = gr.Dropdown(["colour", "shape", "size", "position", "judged_colour", "judged_shape",
                                             "prompt"], value="colour", label="Colour by")
                map_btn = gr.Button("Draw map", elem_id="dir-map-draw")
                hmap = scatter_map(height=420, elem_id="dir-map")
        with gr.Column(scale=2, min_width=320):
            msg = gr.Markdown(elem_id="dir-message")
            # short headers that can wrap between words, and cells that wrap, so the table fits its column
            lib = gr.Dataframe(shown_library(empty_table(LIBRARY_COLUMNS)), label="Directions", interactive=False,
                               max_height=260, wrap=True, column_widths=["13%", "21%", "9%", "14%", "17%", "15%", "11%"],
                               elem_id="dir-table")
            with gr.Accordion("Discover: PCA (unsupervised)", open=True):
                with gr.Row():
                    pca_n = gr.Number(value=svc.n_bank, precision=0, label="Samples")
                    pca_k = gr.Number(value=10, precision=0, label="Directions (k)")
                pca_btn = gr.Button("Discover", elem_id="dir-pca")
            with gr.Accordion("Discover: NoiseCLR (unsupervised, learned)", open=False):
                gr.Markdown("Directions in the text conditioning, learned by contrasting the noise predictions "
                            "they cause on the samples above (Dalva & Yanardag 2024); about 30 s per 150 steps.")
                with gr.Row():
                    nc_k = gr.Number(value=10, precision=0, label="Directions (k)", minimum=2, maximum=32)
                    nc_steps = gr.Number(value=150, precision=0, label="Steps", minimum=1, maximum=2000)
                nc_btn = gr.Button("Learn", elem_id="dir-noiseclr")
            with gr.Accordion("Supervised (Shapes factors)", open=False):
                factor = gr.Dropdown(["colour", "shape", "size", "position"], value="colour", label="Factor")
                sup_note = gr.Markdown(supervised_note(backends, "colour"), elem_id="dir-supervised-note")
                value = gr.Textbox(value="blue", label="Towards value")
                from_value = gr.Textbox(label="From value (optional; default: all others)")
                labels = gr.Radio(["truth", "judge"], value="truth", label="Labels")
                ortho = gr.Dropdown(choices=[], multiselect=True, label="Orthogonal to (conditional)")
                sup_btn = gr.Button("Add")
                gr.Markdown("Or from two groups of h-space samples (ids on the map, e.g. `h-3, h-17`):")
                grp_a = gr.Textbox(label="Group A (from)")
                grp_b = gr.Textbox(label="Group B (towards)")
                grp_btn = gr.Button("Add A → B")
            with gr.Accordion("Prompt pair / text", open=False):
                pa = gr.Textbox(value="a red circle", label="Prompt A")
                pb = gr.Textbox(value="a blue circle", label="Prompt B")
                pn = gr.Number(value=8, precision=0, label="Seeds")
                with gr.Row():
                    pair_btn = gr.Button("h-space: mean h(B) − h(A)")
                    text_btn = gr.Button("Text: E(B) − E(A)")
            with gr.Accordion("Image-specific (Jacobian)", open=False):
                jstep = gr.Slider(0, 9, value=2, step=1, label="Step")
                jk = gr.Number(value=3, precision=0, label="k")
                jregion = gr.Textbox(label="Region (optional): a cell like 'top left' or x0,y0,x1,y1")
                jac_btn = gr.Button("Find")
            with gr.Accordion("Judge / export / import / Atlas", open=False):
                judge_dd = gr.Dropdown(choices=[], label="Direction to judge")
                judge_n = gr.Number(value=12, precision=0, label="Samples")
                judge_btn = gr.Button("Judge")
                judge_md = gr.Markdown()
                export_dd = gr.Dropdown(choices=[], multiselect=True, label="Export (empty: all)")
                export_btn = gr.Button("Export .safetensors")
                export_file = gr.File(label="Export", interactive=False)
                import_file = gr.File(label="Import .safetensors", file_types=[".safetensors"])
                atlas_step = gr.Slider(0, 9, value=5, step=1, label="Step for the Atlas map")
                atlas_btn = gr.Button("Send h-space to the Atlas")
                atlas_md = gr.Markdown()
            with gr.Accordion("Disentanglement of each family (MIG, DCI, InfoMEC)", open=False):
                gr.Markdown("How disentangled each kind of direction in the library is against the Shapes factors "
                            "the prompts asked for (1: each direction reads one factor and each factor one "
                            "direction), beside PCA of h as a baseline; at the middle step, over the samples above.")
                dis_btn = gr.Button("Disentanglement scores", elem_id="dir-disentanglement-run")
                dis_md = gr.Markdown(elem_id="dir-disentanglement-note")
                dis_table = gr.Dataframe(empty_table(DISENTANGLEMENT_COLUMNS), label="Disentanglement", interactive=False,
                                         wrap=True, elem_id="dir-disentanglement")

    # -- wiring ------------------------------------------------------------------------
    src_outputs = [state, src_img, out_img, src_info] + slot_s
    hidden = dict(api_visibility="undocumented")
    gen_btn.click(ui_prompt, [prompt, seed, steps, eta, guidance, layer], src_outputs,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    prompt.submit(ui_prompt, [prompt, seed, steps, eta, guidance, layer], src_outputs,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    up_btn.click(ui_upload, [upload, up_prompt, method, steps, eta, guidance, layer], src_outputs,
                 concurrency_id="model-directions", concurrency_limit=1, **hidden)
    item_btn.click(ui_item, [item_corpus, item_id, steps, layer], src_outputs,
                   concurrency_id="model-directions", concurrency_limit=1, **hidden)
    edit_inputs = [state, t0, t1, asym, half] + slot_dd + slot_s
    for s in slot_s + [t0, t1, asym, half]:
        s.input(ui_edit, edit_inputs, out_img, trigger_mode="always_last", show_progress="hidden",
                concurrency_id="model-directions", concurrency_limit=1, **hidden)
    def slot_slider(did, value):
        """The slot's slider fits its direction (a text direction's is narrower); the value is kept within it."""
        try:
            sl = svc.slider(did)
        except InputError:
            sl = svc.slider(None)
        r = sl["range"]
        return gr.update(minimum=-r, maximum=r, step=sl["step"], label=sl["label"],
                         value=min(max(float(value or 0), -r), r))

    for dd, s in zip(slot_dd, slot_s):
        dd.change(slot_slider, [dd, s], s, queue=False, show_progress="hidden", **hidden).then(
            ui_edit, edit_inputs, out_img, trigger_mode="always_last", show_progress="hidden",
            concurrency_id="model-directions", concurrency_limit=1, **hidden)
    lib_outs = [msg, lib, strip_dd, judge_dd, ortho] + slot_dd

    def with_export(fn):
        """fn's library outputs plus the export menu."""
        @functools.wraps(fn)
        def inner(*a, **kw):
            return fn(*a, **kw) + [gr.update(choices=svc.choices())]

        return inner

    lib_outs_x = lib_outs + [export_dd]
    pca_btn.click(with_export(ui_pca), [pca_n, pca_k, layer, rhalf], lib_outs_x,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    nc_btn.click(with_export(ui_noiseclr), [nc_k, nc_steps, pca_n], lib_outs_x,
                 concurrency_id="model-directions", concurrency_limit=1, **hidden)
    factor.change(lambda f: supervised_note(backends, f), factor, sup_note, queue=False, show_progress="hidden", **hidden)
    sup_btn.click(with_export(ui_supervised), [factor, value, from_value, ortho, labels, layer, rhalf], lib_outs_x,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    grp_btn.click(with_export(ui_groups), [grp_a, grp_b, layer, rhalf], lib_outs_x,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    pair_btn.click(with_export(ui_pair), [pa, pb, pn, layer], lib_outs_x,
                   concurrency_id="model-directions", concurrency_limit=1, **hidden)
    text_btn.click(with_export(ui_text), [pa, pb], lib_outs_x, **hidden)
    jac_btn.click(with_export(ui_jacobian), [state, jstep, jk, jregion], lib_outs_x,
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    import_file.upload(with_export(ui_import), [import_file], lib_outs_x, **hidden)
    export_btn.click(ui_export, [export_dd], export_file, **hidden)
    strip_btn.click(ui_strip, [state, strip_dd, strip_s, strip_n, t0, t1, half], [strip, strip_md],
                    concurrency_id="model-directions", concurrency_limit=1, **hidden)

    ui_judge_x = with_export(ui_judge)

    judge_btn.click(ui_judge_x, [judge_dd, judge_n], [judge_md, lib, strip_dd, judge_dd, ortho] + slot_dd + [export_dd],
                    concurrency_id="model-directions", concurrency_limit=1, **hidden)
    dis_btn.click(ui_disentanglement, [pca_n, layer, rhalf], [dis_table, dis_md],
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    atlas_btn.click(ui_atlas, [atlas_step, pca_n, layer, rhalf], atlas_md,
                    concurrency_id="model-directions", concurrency_limit=1, **hidden)

    def axis_choices():
        return ["PCA 1", "PCA 2", "PCA 3"] + [d for _, d in svc.choices()]

    @guard
    def ui_map(step, x, y, color, layer, rhalf, progress=gr.Progress()):
        progress(0.0, desc="sampling the h-space bank (first time only)")
        return (svc.map_payload(step, x, y, color, layer=layer, half=rhalf), gr.update(choices=axis_choices()),
                gr.update(choices=axis_choices()))

    @guard
    def ui_map_click(step, x, y, color, steps, layer, rhalf, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        pid = str(data.get("id", ""))
        if not pid.startswith("h-") or "@" in pid:
            raise InputError("click a sample (not a trajectory point)")
        item = int(pid[2:])
        key, d = svc.source_from_sample(item, steps, layer=layer, half=rhalf)
        img = svc.source(key).images[0]
        return ((svc.map_payload(step, x, y, color, item, layer, rhalf), {"source": key}, img, img, info_md(d))
                + tuple(gr.update(value=0) for _ in range(N_SLOTS)))

    map_btn.click(ui_map, [map_step, map_x, map_y, map_color, layer, rhalf], [hmap, map_x, map_y],
                  concurrency_id="model-directions", concurrency_limit=1, **hidden)
    hmap.point_click(ui_map_click, [map_step, map_x, map_y, map_color, steps, layer, rhalf], [hmap] + src_outputs,
                     concurrency_id="model-directions", concurrency_limit=1, **hidden)

    def ui_refresh():
        return [""] + lib_outputs() + [gr.update(choices=svc.choices())]

    # A new visitor sees the directions already in the (shared) library.
    gr.context.Context.root_block.load(ui_refresh, None, lib_outs_x, **hidden)
    _register_api(svc, api_guard)
    return svc


def _register_api(svc: DirectionsService, guard):
    def directions_source_prompt(prompt: str, seed: int = 0, steps: int = 10, eta: float = 1.0,
                                 guidance_scale: float = -1.0, layer: str = "mid_block") -> dict:
        """Start from a prompt and seed: {"source": key, "image": PNG data URL, ...}; h recorded at `layer`."""
        key, d = svc.source_from_prompt(prompt, seed, steps, eta, guidance_scale, layer)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_source_image(file: FileData, prompt: str = "", method: str = "ddpm", steps: int = 10) -> dict:
        """Start from an uploaded image (handle_file(path)): inverted (ddpm: exact; ddim), with PSNRs."""
        key, d = svc.source_from_image(uploaded_path(file), prompt, method, steps)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_source_item(corpus: str, item_id: str, steps: int = 10) -> dict:
        """Start from an Atlas item (h-space samples regenerate; image items are inverted)."""
        key, d = svc.source_from_item(corpus, item_id, steps)
        return {**d, "image": to_data_url(svc.source(key).images[0])}

    def directions_layers() -> list[str]:
        """Blocks whose output can be the edited space ('mid_block' is h-space proper)."""
        return svc.layers()

    def directions_list() -> list[dict]:
        """The direction library: id, name, kind, default strength, judge results when known."""
        return svc.list()

    def directions_discover_pca(n_samples: int = 200, k: int = 10, layer: str = "mid_block",
                                record_half: str = "uncond") -> list[dict]:
        """Unsupervised: top-k PCA directions of h (at `layer`, read from the guidance half `record_half`)
        per timestep over n generated samples."""
        ids = svc.discover_pca(n_samples, k, layer=layer, half=record_half)
        return [svc.get(i).summary() for i in ids]

    def directions_supervised(factor: str, value: str, from_value: str = "", orthogonal_to: list[str] | None = None,
                              labels: str = "truth", layer: str = "mid_block", record_half: str = "uncond") -> dict:
        """Supervised: mean(h | factor=value) − mean(h | others or from_value), optionally ⊥ other directions."""
        return svc.get(svc.supervised(factor, value, from_value, orthogonal_to or [], labels, layer=layer,
                                      half=record_half)).summary()

    def directions_groups(positive: list[int], negative: list[int], name: str = "group A → group B") -> dict:
        """From two groups of h-space corpus items (row indices, e.g. two Atlas selections)."""
        return svc.get(svc.groups(positive, negative, name)).summary()

    def directions_prompt_pair(prompt_a: str, prompt_b: str, n: int = 8) -> dict:
        """h-space direction from a prompt pair: mean h(B) − mean h(A) over n seeds."""
        return svc.get(svc.prompt_pair(prompt_a, prompt_b, n)).summary()

    def directions_text(prompt_a: str, prompt_b: str) -> dict:
        """Text direction: E(B) − E(A) added to the text conditioning (strength 1 = prompt B)."""
        return svc.get(svc.text(prompt_a, prompt_b)).summary()

    def directions_image_specific(source: str, step: int = 2, k: int = 3, region: str = "") -> list[dict]:
        """Top-k right singular vectors of ∂ε/∂h at one step of a source (optionally in a region)."""
        return [svc.get(i).summary() for i in svc.image_specific(source, step, k, region)]

    def directions_edit(source: str, direction_ids: list[str], strengths: list[float], t_start: float = 0.0,
                        t_end: float = 1.0, asymmetric: bool = False, delta_half: str = "both") -> dict:
        """The source edited along directions (strengths in σ) over the fraction [t_start, t_end) of the
        steps, optionally with Asyrp's asymmetric process, Δh in "both" guidance halves or only the
        "cond" one (the guidance scale then multiplies it): {"image": PNG data URL, "ms": server time}."""
        t = time.perf_counter()
        img = svc.edit(source, direction_ids, strengths, t_start, t_end, asymmetric, delta_half)
        ms = (time.perf_counter() - t) * 1000
        return {"image": to_data_url(img), "ms": round(ms, 1)}

    def directions_strip(source: str, direction_id: str, strength: float = 0.0, frames: int = 11,
                         delta_half: str = "both") -> dict:
        """Frames from −strength to +strength and the traversal's ISTD. strength 0: the range is read off
        this image's change curve (the smallest strength that changes it clearly, kept below the first
        broken frame), and "range" says how: {"strength", "reason", "curve": [{strength, change, broken}]}."""
        ss, imgs, ist, chosen = svc.strip(source, direction_id, strength or None, frames, delta_half=delta_half)
        return {"strengths": [float(s) for s in ss], "images": [to_data_url(i) for i in imgs], "istd": ist,
                "range": chosen}

    def directions_noiseclr(k: int = 10, steps: int = 150, batch_size: int = 4, n_samples: int = 0,
                            temperature: float = 0.5, seed: int = 0, corpus: str = "") -> list[dict]:
        """Unsupervised, learned: NoiseCLR's k directions in the text conditioning, trained for `steps`
        steps of `batch_size` images (the bank's n_samples generated samples, 0: its size; or the images of
        the Atlas corpus `corpus`) by a contrastive loss (temperature) on the noise predictions they
        cause; added to the library as text directions "NoiseCLR 1..k"."""
        return [svc.get(i).summary() for i in svc.noiseclr(k, steps, batch_size, n_samples or None, temperature,
                                                           seed, corpus)]

    def directions_judge(direction_id: str, n_sources: int = 12, strength: float = 0.0) -> dict:
        """What the judge sees change (per factor), the disentanglement score, a name, ISTD."""
        return svc.judge_direction(direction_id, n_sources, strength or None)

    def directions_map(step: int = 5, x_axis: str = "PCA 1", y_axis: str = "PCA 2", item: int = -1,
                       record_half: str = "uncond") -> dict:
        """The h-space bank on two axes (direction ids or 'PCA k') at a step, with an item's trajectory
        across steps: {"ids", "x", "y", "trajectory": [[x, y], ...] or None, "axes"}."""
        m = svc.map_data(step, x_axis, y_axis, None if item is None or item < 0 else item, half=record_half)
        tr = m["trajectory"]
        return {"ids": [f"h-{i}" for i in range(len(m["xy"]))], "x": m["xy"][:, 0].tolist(), "y": m["xy"][:, 1].tolist(),
                "trajectory": None if tr is None else tr.tolist(), "axes": list(m["titles"])}

    def directions_disentanglement(step: int = -1, n_samples: int = 0, record_half: str = "") -> list[dict]:
        """MIG, DCI (disentanglement, completeness, informativeness) and InfoMEC (InfoM, InfoE, InfoC) of each
        family (kind) of directions in the library against the Shapes factors, one row per family plus
        "PCA of h (top K)" baselines: h of n_samples (0: the bank's size) at `step` (−1: the middle step),
        read from the guidance half `record_half` ("": the half the directions were made from)."""
        table = svc.disentanglement(None if step < 0 else step, n_samples or None, half=record_half or None)
        return table.to_dict(orient="records")

    def directions_export(direction_ids: list[str] | None = None) -> FileData:
        """The directions (all when none are named) as .safetensors with JSON metadata."""
        return FileData(path=svc.export(direction_ids or []))

    def directions_import(file: FileData) -> list[dict]:
        """Import a .safetensors directions file (handle_file(path))."""
        return [svc.get(i).summary() for i in svc.import_file(uploaded_path(file))]

    def directions_to_atlas(step: int = 5, n_samples: int = 200, record_half: str = "uncond") -> str:
        """Add the h-space (pooled h at `step`, read from the guidance half `record_half`) of n samples to the
        Atlas; returns its corpus key."""
        return svc.to_atlas(step, n_samples, half=record_half)

    for fn in (directions_layers, directions_source_prompt, directions_source_image, directions_source_item, directions_list,
               directions_discover_pca, directions_supervised, directions_groups, directions_prompt_pair,
               directions_text, directions_image_specific, directions_strip, directions_judge, directions_export,
               directions_import, directions_to_atlas, directions_map, directions_disentanglement,
               directions_noiseclr):
        gr.api(guard(fn), api_name=fn.__name__,
               concurrency_id=(cid := "dir-api" if fn in (directions_layers, directions_list, directions_text,
                                                            directions_export, directions_import)
                               else "model-directions"),
               concurrency_limit="default" if cid == "dir-api" else 1)
    gr.api(guard(directions_edit), api_name="directions_edit", concurrency_id="model-directions",
           concurrency_limit=1)
