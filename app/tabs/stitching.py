"""Stitching tab: the layout, event wiring and named API endpoints of app/services/stitching.py (what the
tab does): compare two latent spaces through relative representations, and stitch models zero-shot.
"""
from __future__ import annotations

import os

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard
from app.components.errors import guard as _guard
from app.components.scatter_gl import indices_from_event
from app.components.tables import empty_table
from app.services.stitching import (
    DEFAULTS,
    KINDS,
    METRICS_COLUMNS,
    TABLE_COLUMNS,
    StitchingService,
    metrics_frame,
    pending_maps,
    read_image_file,
    table_frame,
)
from backends.errors import InputError
from backends.registry import Backends
from backends.representations import relative as rel


def _upscale(img: np.ndarray, side: int = 128) -> np.ndarray:
    """A decoded image enlarged for the page (nearest neighbour)."""
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.NEAREST))


def build_stitching(backends: Backends):
    from app.components.scatter import scatter_map

    svc = StitchingService(backends)
    a0, b0 = svc.default_pair()
    names = svc.usable_space_names()

    def params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text):
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, label=label or "", seed=seed,
                       mode=mode, output_norm=output_norm, k=k)
        p["anchor_ids"] = [t.strip() for t in (anchor_text or "").replace("\n", ",").split(",") if t.strip()]
        return p

    # -- handlers ----------------------------------------------------------------------
    @_guard
    def on_spaces(space_a, space_b):
        pair = svc.pair(space_a, space_b)
        labels = list(pair.labels)
        info = (f"**{len(pair):,} items** · A: {space_a} ({pair.x_a.shape[1]}-d) · B: {space_b} ({pair.x_b.shape[1]}-d)"
                f" · {len(pair.train):,} train / {len(pair.test):,} test")
        lab = labels[0] if labels else None
        demo = svc.demo_items(svc.params(space_a, space_b))
        return (gr.update(choices=labels, value=lab), gr.update(choices=labels, value=lab), info,
                gr.update(choices=demo, value=demo[0] if demo else None))

    def on_pending(space_a, space_b, representation, shown):
        """At once, before the new pair is loaded (seconds for a space not computed yet): nothing on
        the page keeps describing the previous pair. The maps and metrics on screen (if a comparison
        was shown) make way for empty maps titled with the new pair; the demo's result is cleared."""
        info_md = f"Loading **{space_a}** and **{space_b}**…"
        demo_cleared = (None, None, "", None)
        if not shown:
            return (info_md, gr.skip(), gr.skip(), gr.skip(), gr.skip()) + demo_cleared
        map_a, map_b = pending_maps(space_a, space_b, representation or "relative")
        return (info_md, empty_table(METRICS_COLUMNS), f"Comparing {space_a} and {space_b}…", map_a, map_b) + \
            demo_cleared

    @_guard
    def on_compare(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                   representation, method, color_by, progress=gr.Progress()):
        p = params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text)
        progress(0.1, desc="anchors and metrics")
        out = svc.compare(p)
        progress(0.5, desc="maps")
        map_a, map_b = svc.payloads(p, representation, method, color_by)
        note = (f"{out['n_anchors']} anchors ({p['strategy']}) over {out['n_items']:,} items; k = {p['k']}. "
                "Jaccard and MRR retrieve B's items with A's vector of an item (cross-space); with absolute "
                "vectors of two independently trained models they sit near chance.")
        return p, metrics_frame(out), note, map_a, map_b

    @_guard
    def on_table(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                 with_decoders, progress=gr.Progress()):
        p = params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text)
        progress(0.1, desc="training the heads (seconds; cached afterwards)")
        t = svc.table(p, bool(with_decoders))
        md = (f"Test accuracy on **{t['label']}** ({t['n_test']:,} test items; heads trained on {t['n_train']:,}). "
              f"Chance (most frequent class): **{t['chance']:.3f}**. Rows marked *stitched* read one model's "
              "vectors with the head trained on the other's, with no training.")
        if "decoding" in t:
            md += "\n\nDecoders (pixel MSE on the test items; predicting the mean image scores " + \
                f"{t['mse_mean_image']:.4f}): " + "; ".join(
                    f"{r['encoder'][0]}→{r['decoder'][0]} {r['mse']:.4f}" for r in t["decoding"])
        return p, table_frame(t), md

    @_guard
    def on_new_pair(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                    representation, method, color_by, shown, progress=gr.Progress()):
        """Another pair of spaces was picked: the comparison on screen is redone for it (if one was
        shown) and the stitching table, which needs training, is cleared, so nothing on the page
        describes the previous pair."""
        pending = f"Press **Train heads and stitch** for {space_a} vs {space_b}."
        if not shown:
            return shown, gr.skip(), gr.skip(), gr.skip(), gr.skip(), empty_table(TABLE_COLUMNS), pending
        out = on_compare(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                         representation, method, color_by, progress)
        return (*out, empty_table(TABLE_COLUMNS), pending)

    def _linked(p, representation, method, color_by, selected, highlight):
        return svc.payloads(p, representation, method, color_by, selected=selected, highlight=highlight)

    @_guard
    def on_select(p, representation, method, color_by, evt: gr.EventData):
        idx = indices_from_event(getattr(evt, "_data", None))  # a list, or a bitmask from a large GL map
        if not p:
            raise InputError("press Compare first")
        a, b = _linked(p, representation, method, color_by, idx, [])
        return a, b, f"**{len(idx):,}** items selected: highlighted in both maps."

    @_guard
    def on_click(p, representation, method, color_by, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        i = int(data.get("index", -1))
        if i < 0 or not p:
            raise InputError("click landed on no point")
        pair = svc.pair(p["space_a"], p["space_b"])
        a, b = _linked(p, representation, method, color_by, [], [i])
        item_id = pair.ids()[i]
        return a, b, f"Item **{item_id}** highlighted in both maps.", gr.update(value=item_id)

    @_guard
    def on_demo_item(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                     item_id, encoder, head, kind):
        if not item_id:
            raise InputError("pick a test item first")
        p = params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text)
        r = svc.classify_item(p, item_id, encoder, head, kind)
        pair = svc.pair(p["space_a"], p["space_b"])
        img = pair.images[pair.ids().index(item_id)] if pair.images is not None else None
        # the model's 32×32 (or 8×8) image enlarged for the page, like the decoder's rendering beside it
        return (enlarge(img, 128) if img is not None else None), {k: v for k, v in r["probabilities"].items()}, _demo_md(r)

    @_guard
    def on_decode(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                  item_id, encoder, head):
        p = params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text)
        if not item_id or svc.pair(space_a, space_b).images is None:
            return None
        return _upscale(svc.decode_item(p, item_id, encoder, head))

    @_guard
    def on_demo_image(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text,
                      image, encoder, head, kind):
        p = params_of(space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text)
        r = svc.classify_image(p, image, encoder, head, kind)
        return {k: v for k, v in r["probabilities"].items()}, _demo_md(r)

    # -- layout ------------------------------------------------------------------------
    state = gr.State({})
    gr.Markdown("Compare two models' spaces of the same items through **relative representations** (cosine "
                "similarity to shared anchor items, Moschella et al.), and **stitch** them: a head trained on "
                "A's relative space reads B's with no training.")
    with gr.Row():
        space_a = gr.Dropdown(choices=names, value=a0, label="Space A", elem_id="st-space-a")
        space_b = gr.Dropdown(choices=names, value=b0, label="Space B", elem_id="st-space-b")
        label = gr.Dropdown(choices=[], label="Label (heads, stratified anchors)", elem_id="st-label")
        color_by = gr.Dropdown(choices=[], label="Colour maps by", elem_id="st-color")
    info = gr.Markdown(elem_id="st-info")
    with gr.Row():
        n_anchors = gr.Slider(2, 1000, value=DEFAULTS["n_anchors"], step=1, label="Anchors", elem_id="st-n-anchors")
        strategy = gr.Radio(list(rel.ANCHOR_STRATEGIES), value="random", label="Anchor choice")
        mode = gr.Radio(list(rel.PROJECTIONS), value="cosine", label="Projection (cosine, centred cosine, change of basis)")
        output_norm = gr.Dropdown(list(rel.OUTPUT_NORMS), value="none", label="Output normalisation")
        k = gr.Slider(1, 50, value=10, step=1, label="k (neighbours)")
        seed = gr.Number(value=0, precision=0, label="Seed", minimum=0)
    anchor_text = gr.Textbox(label="Anchor ids (optional, comma-separated; overrides the count and choice above)",
                             lines=1, elem_id="st-anchor-ids")
    with gr.Row():
        representation = gr.Radio(["relative", "absolute"], value="relative", label="Maps show")
        method = gr.Radio(["pca", "umap"], value="pca", label="Map projection (relative PCA: one basis, fitted on A)")
        compare_btn = gr.Button("Compare", variant="primary", elem_id="st-compare")
    with gr.Row():
        with gr.Column(scale=2):
            # the metric names wrap in their column, so the three numeric columns (and their headers,
            # 'procrustes' the longest) fit beside them without a horizontal scroll
            metrics = gr.Dataframe(empty_table(METRICS_COLUMNS),
                                   label="Absolute vs relative (vs Procrustes-translated A)", interactive=False,
                                   wrap=True, column_widths=["28%", "26%", "23%", "23%"], elem_id="st-metrics")
            metrics_note = gr.Markdown()
        with gr.Column(scale=3):
            with gr.Row():
                map_a = scatter_map(height=380, elem_id="st-map-a")
                map_b = scatter_map(height=380, elem_id="st-map-b")
            link_md = gr.Markdown("Lasso or click in one map: the same items light up in the other.",
                                  elem_id="st-link")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                stitch_btn = gr.Button("Train heads and stitch", variant="primary", elem_id="st-stitch")
                with_decoders = gr.Checkbox(label="also train image decoders (slower)", value=False)
            table = gr.Dataframe(empty_table(TABLE_COLUMNS), label="Stitching table (test accuracy)",
                                 interactive=False, elem_id="st-table")
            table_md = gr.Markdown()
        with gr.Column(scale=2):
            gr.Markdown("**Live demo**: encode with one model, classify with the other's head.")
            with gr.Row():
                encoder = gr.Radio(["A", "B"], value="B", label="Encoder")
                head = gr.Radio(["A", "B"], value="A", label="Head trained on")
                kind = gr.Radio(list(KINDS), value="relative", label="Through")
            demo_item = gr.Dropdown(choices=[], label="Pick a test item", elem_id="st-demo-item")
            with gr.Row():
                demo_img = gr.Image(label="Item", height=140, interactive=False, elem_id="st-demo-image", buttons=["download", "fullscreen"])
                upload = gr.Image(label="…or upload an image", height=140, type="numpy", sources=["upload"])
            with gr.Row():
                demo_label = gr.Label(num_top_classes=5, label="Prediction", elem_id="st-demo-label")
                demo_dec = gr.Image(label="Rendered by the head-side decoder", height=140, interactive=False,
                                    elem_id="st-demo-decoded", buttons=["download", "fullscreen"])
            demo_md = gr.Markdown(elem_id="st-demo-md")

    # -- wiring ------------------------------------------------------------------------
    pv = [space_a, space_b, n_anchors, strategy, label, seed, mode, output_norm, k, anchor_text]
    for dd in (space_a, space_b):
        pending = dd.input(on_pending, [space_a, space_b, representation, state],
                           [info, metrics, metrics_note, map_a, map_b, demo_img, demo_label, demo_md, demo_dec],
                           api_visibility="undocumented", queue=False, show_progress="hidden")
        pending.then(on_spaces, [space_a, space_b], [label, color_by, info, demo_item], api_visibility="undocumented"
                     ).then(on_new_pair, pv + [representation, method, color_by, state],
                            [state, metrics, metrics_note, map_a, map_b, table, table_md],
                            api_visibility="undocumented", concurrency_id="stitching-heavy")
    compare_btn.click(on_compare, pv + [representation, method, color_by], [state, metrics, metrics_note, map_a, map_b],
                      api_visibility="undocumented", concurrency_id="stitching-heavy")
    for ctl in (representation, method, color_by):
        ctl.input(on_compare, pv + [representation, method, color_by], [state, metrics, metrics_note, map_a, map_b],
                  api_visibility="undocumented", concurrency_id="stitching-heavy", trigger_mode="always_last")
    stitch_btn.click(on_table, pv + [with_decoders], [state, table, table_md], api_visibility="undocumented",
                     concurrency_id="stitching-heavy")
    for m in (map_a, map_b):
        m.points_selected(on_select, [state, representation, method, color_by], [map_a, map_b, link_md],
                          api_visibility="undocumented", trigger_mode="always_last")
        m.point_click(on_click, [state, representation, method, color_by],
                      [map_a, map_b, link_md, demo_item], api_visibility="undocumented", trigger_mode="always_last"
                      ).success(on_demo_item, pv + [demo_item, encoder, head, kind], [demo_img, demo_label, demo_md],
                                api_visibility="undocumented", concurrency_id="stitching-heavy"
                                ).success(on_decode, pv + [demo_item, encoder, head], demo_dec,
                                          api_visibility="undocumented", concurrency_id="stitching-heavy")
    demo_inputs = pv + [demo_item, encoder, head, kind]
    demo_item.input(on_demo_item, demo_inputs, [demo_img, demo_label, demo_md], api_visibility="undocumented",
                     concurrency_id="stitching-heavy")
    for ctl in (encoder, head, kind):
        ctl.input(on_demo_item, demo_inputs, [demo_img, demo_label, demo_md], api_visibility="undocumented",
                  concurrency_id="stitching-heavy")
    upload.upload(on_demo_image, pv + [upload, encoder, head, kind], [demo_label, demo_md],
                  api_visibility="undocumented", concurrency_id="stitching-heavy")

    # Fill the menus when the page loads (cheap: the default pair's vectors are computed once).
    demo = gr.context.Context.root_block
    demo.load(on_spaces, [space_a, space_b], [label, color_by, info, demo_item], api_visibility="undocumented")

    _register_api(svc)
    return svc


def _demo_md(r: dict) -> str:
    truth = f" · truth: **{r['true']}** ({r['split']} item)" if "true" in r else ""
    return (f"{r['label']}: **{r['prediction']}**{truth}  \nencoded by {r['encoder']}, read by the {r['kind']} "
            f"head trained on {r['head']}")


def _register_api(svc: StitchingService):
    def stitching_spaces() -> list[dict]:
        """Spaces that can be compared: name, world (spaces of one world embed the same items), description,
        and why a space is unavailable (null when usable). Atlas corpora appear as "corpus:<key>"."""
        return svc.spaces()

    def stitching_anchors(space_a: str, space_b: str, n_anchors: int = 300, strategy: str = "random",
                          label: str = "", seed: int = 0) -> list[str]:
        """Ids of the anchor items chosen from the training split (random, stratified, farthest, kmeans)."""
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, label=label, seed=seed)
        pair = svc.pair(space_a, space_b)
        return [pair.ids()[i] for i in svc.anchors(p)]

    def stitching_compare(space_a: str, space_b: str, n_anchors: int = 300, strategy: str = "random",
                          k: int = 10, mode: str = "cosine", output_norm: str = "none", seed: int = 0,
                          label: str = "", anchor_ids: list[str] | None = None) -> dict:
        """Jaccard@k, MRR, mean cosine, linear CKA and kNN overlap: absolute vs relative vs Procrustes.
        anchor_ids: explicit anchors (ids of items), overriding n_anchors/strategy."""
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, k=k, mode=mode,
                       output_norm=output_norm, seed=seed, label=label)
        p["anchor_ids"] = list(anchor_ids or [])
        return svc.compare(p)

    def stitching_maps(space_a: str, space_b: str, representation: str = "relative", method: str = "pca",
                       n_anchors: int = 300, strategy: str = "random", seed: int = 0) -> dict:
        """2-D maps of both spaces (same item order): {"ids", "a": {"x", "y"}, "b": {"x", "y"}}."""
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, seed=seed)
        xa, xb = svc.coordinates(p, representation, method)
        return {"ids": svc.pair(space_a, space_b).ids(), "a": {"x": xa[:, 0].tolist(), "y": xa[:, 1].tolist()},
                "b": {"x": xb[:, 0].tolist(), "y": xb[:, 1].tolist()}}

    def stitching_table(space_a: str, space_b: str, label: str = "", n_anchors: int = 300,
                        strategy: str = "random", mode: str = "cosine", output_norm: str = "none",
                        seed: int = 0, decoders: bool = False) -> dict:
        """Test accuracy of A→A, B→B, A→B, B→A (encoder → head) for absolute, relative and Procrustes;
        decoders=True adds the pixel MSE of images rendered by decoders trained on each relative space."""
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, label=label, mode=mode,
                       output_norm=output_norm, seed=seed)
        return svc.table(p, bool(decoders))

    def stitching_classify(space_a: str, space_b: str, item_id: str, encoder: str = "B", head: str = "A",
                           kind: str = "relative", label: str = "", n_anchors: int = 300,
                           strategy: str = "random", seed: int = 0) -> dict:
        """Classify a corpus item encoded by `encoder` with the head trained on `head`'s space."""
        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, label=label, seed=seed)
        return svc.classify_item(p, item_id, encoder, head, kind)

    def stitching_classify_image(space_a: str, space_b: str, image: FileData, encoder: str = "B",
                                 head: str = "A", kind: str = "relative", label: str = "",
                                 n_anchors: int = 300, strategy: str = "random", seed: int = 0) -> dict:
        """Upload an image (gradio_client: handle_file(path)), encode it with `encoder`, classify with `head`."""
        from app.components.files import uploaded_path

        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, label=label, seed=seed)
        return svc.classify_image(p, read_image_file(uploaded_path(image)), encoder, head, kind)

    def stitching_decode(space_a: str, space_b: str, item_id: str, encoder: str = "B", decoder: str = "A",
                         n_anchors: int = 300, strategy: str = "random", seed: int = 0) -> FileData:
        """PNG of an item encoded by `encoder` and rendered by the decoder trained on `decoder`'s relative space."""
        import tempfile

        from PIL import Image

        p = svc.params(space_a, space_b, n_anchors=n_anchors, strategy=strategy, seed=seed)
        img = svc.decode_item(p, item_id, encoder, decoder)
        fd, path = tempfile.mkstemp(prefix="stitching-decoded-", suffix=".png")
        os.close(fd)
        Image.fromarray(img).save(path)
        return FileData(path=path)

    for fn in (stitching_spaces, stitching_anchors, stitching_compare, stitching_maps, stitching_table,
               stitching_classify, stitching_classify_image, stitching_decode):
        gr.api(api_guard(fn), api_name=fn.__name__, concurrency_id="stitching-api")
