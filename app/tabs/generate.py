"""Generate tab: the layout and event wiring of app/services/generate.py (what the tab does).

Prompt, negative prompt, seed, steps, guidance (scale and method) → image and notes. Opening the
tab shows the example prompt's image.
"""
from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData

from app.components.display import enlarge
from app.components.errors import api_guard, guard
from app.components.files import served_dir
from app.services.generate import FAILURE_BUDGET_RANGE, FAILURE_KINDS, GUIDANCE_RANGE, STEPS_RANGE, GenerateService
from backends.registry import Backends


def build_generate(backends: Backends):
    svc = GenerateService(backends)

    @guard
    def run(prompt, negative, seed, steps, guidance, method, layout=True, progress=gr.Progress()):
        image, notes = svc.generate(prompt, negative, seed, steps, guidance, method,
                                    progress=lambda f, text: progress(f, desc=text), layout=bool(layout))
        shown = enlarge(image)
        if shown.shape != image.shape:
            notes.append(f"{image.shape[1]}×{image.shape[0]} image, shown enlarged to {shown.shape[1]}×{shown.shape[0]} "
                         "(nearest neighbour); the `generate` API returns it at its own size")
        return shown, "\n".join(f"- {n}" for n in notes)

    d = backends.generator_defaults()
    d_steps, d_guidance = d["steps"], d["guidance_scale"]
    gr.Markdown(svc.status(), elem_id="gen-status")
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="a large red circle in the center", elem_id="gen-prompt")
            negative = gr.Textbox(label="Negative prompt", placeholder="optional")
            with gr.Row():
                seed = gr.Number(label="Seed", value=0, precision=0)
                steps = gr.Slider(*STEPS_RANGE, value=d_steps, step=1, label="Steps")
                guidance = gr.Slider(*GUIDANCE_RANGE, value=d_guidance, step=0.5, label="Guidance")
            choices = svc.method_choices()
            method = gr.Radio(choices, value=choices[0], label="Guidance method", elem_id="gen-method",
                              info="autoguidance: guided away from an earlier, weaker checkpoint of the model "
                                   "(no negative prompt); classifier-free: away from the empty prompt")
            can_layout = backends.prompt_layout() is not None
            layout = gr.Checkbox(can_layout, visible=can_layout, elem_id="gen-layout",
                                 label="Lay out several objects: a prompt naming two or three gets each its own area",
                                 info="e.g. 'a red circle and a blue square on a black background'; "
                                      "off: drawn from the words alone (mostly one object)")
            go = gr.Button("Generate", variant="primary", elem_id="gen-go")
        with gr.Column(scale=1):
            image = gr.Image(label="Image", height=320, interactive=False, elem_id="gen-image",
                             buttons=["download", "fullscreen"])  # no share-to-Hub button
            notes = gr.Markdown(elem_id="gen-notes")
    inputs = [prompt, negative, seed, steps, guidance, method, layout]
    # always_last: a click while an image is still being made (the tab's first image, say) is kept
    # and runs next, instead of being dropped as Gradio's default "once" does
    go.click(run, inputs, [image, notes], api_visibility="undocumented", concurrency_id="model-generate",
             concurrency_limit=1, trigger_mode="always_last")
    prompt.submit(run, inputs, [image, notes], api_visibility="undocumented", concurrency_id="model-generate",
                  concurrency_limit=1, trigger_mode="always_last")

    def first_look(shown, prompt, negative, seed, steps, guidance, method, layout, progress=gr.Progress()):
        """Opening the tab shows the example prompt's image (once computed, from the cache) rather
        than an empty box; an image already there stays."""
        if shown is not None:
            return gr.skip()
        return run(prompt, negative, seed, steps, guidance, method, layout, progress=progress)

    tab = gr.context.Context.block  # the gr.Tab this tab's layout is built in
    if isinstance(tab, gr.Tab):
        tab.select(first_look, [image] + inputs, [image, notes], api_visibility="undocumented",
                   concurrency_id="model-generate", concurrency_limit=1)

    # The API endpoint takes plain numbers (the sliders would refuse out-of-range values with a
    # message that does not name the argument); out-of-range values are clamped and reported.
    def generate(prompt: str, negative_prompt: str = "", seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, method: str = "", layout: bool = True) -> tuple[FileData, str]:
        """Generate one image; returns (PNG file, notes about clamps, cuts, guidance and timing).
        steps, guidance: null = the model's defaults (Shapes: 20 DDIM steps, 3.5).
        method: "autoguidance", "classifier-free" or "" (the model's default).
        layout: a prompt naming several objects gets each its own area first (Shapes; the notes say where)."""
        from PIL import Image

        img, notes_list = svc.generate(prompt, negative_prompt, seed, steps, guidance, method, layout=layout)
        out = served_dir("generate-") / "image.png"
        Image.fromarray(img).save(out)
        return FileData(path=str(out)), "\n".join(f"- {n}" for n in notes_list)

    gr.api(api_guard(generate), api_name="generate", concurrency_id="model-generate", concurrency_limit=1)
    build_failure_search(svc)
    return svc


FAILURE_COLUMNS = ["prompt", "asked", "drawn", "agreement", "cluster", "seed"]


def build_failure_search(svc: GenerateService):
    """The "Find failures" accordion (a failure search after SAGE) and its endpoint."""
    families = svc.failure_families()
    with gr.Accordion("Find failures", open=False, elem_id="gen-failures"):
        with gr.Row():
            family = gr.Dropdown(families, value=families[0], label="Prompt family", scale=3)
            budget = gr.Number(label="Budget (images)", value=60, precision=0, minimum=FAILURE_BUDGET_RANGE[0],
                               maximum=FAILURE_BUDGET_RANGE[1], scale=1)
            kind = gr.Radio(list(FAILURE_KINDS), value="latent", label="Search", scale=2,
                            info="latent: evolve the start noise; prompt: reword without changing the asked words; "
                                 "token-gradient: learn two tokens appended to the prompt, by gradients through "
                                 "the sampler; latent-gradient: the start noise by gradients; random: the baseline")
            seed = gr.Number(label="Seed", value=0, precision=0, scale=1)
            grad_steps = gr.Number(label="Backward passes (gradient searches; empty: as the budget allows)",
                                   value=None, precision=0, minimum=0, maximum=400, scale=2,
                                   elem_id="gen-failures-grad-steps")
        go = gr.Button("Run", elem_id="gen-failures-go")
        summary = gr.Markdown(elem_id="gen-failures-summary")
        table = gr.Dataframe(headers=FAILURE_COLUMNS, label="Failures", interactive=False, wrap=True)
        gallery = gr.Gallery(label="What was drawn", columns=8, height=240, object_fit="contain", fit_columns=False,
                             elem_id="gen-failures-gallery")

    @guard
    def run_search(family, budget, kind, seed, grad_steps=None, progress=gr.Progress()):
        out, images = svc.failure_search(family, budget, kind, seed, gradient_steps=grad_steps,
                                         progress=lambda f, text: progress(f, desc=text))
        rows = [[r[c] for c in FAILURE_COLUMNS] for r in out["rows"]]
        where = f"Open it in the **Atlas** tab: corpus *{out['corpus_name']}*." if out["corpus"] else ""
        text = (f"**{out['failures']} failures in {out['used']} images ({out['failure_rate']:.0%})**, {out['kind']} "
                f"search on *{out['family']}*. {where}\n\n" + "\n".join(f"- {n}" for n in out["notes"]))
        shown = [(enlarge(im), f"{r['prompt']} → {r['drawn']}") for im, r in zip(images, out["rows"])]
        return text, rows, shown

    go.click(run_search, [family, budget, kind, seed, grad_steps], [summary, table, gallery], api_visibility="undocumented",
             concurrency_id="model-generate", concurrency_limit=1)

    def generate_failure_search(family: str = "", budget: int = 60, kind: str = "latent", seed: int = 0,
                                steps: int | None = None, gradient_steps: int | None = None) -> dict:
        """Search the generator for failures (after SAGE) with `budget` generated images and register
        them as the Atlas corpus "failures: <family>" (kept under the cache dir: listed after a restart,
        removable with atlas_remove_upload). family: one of the generator's prompt families
        ("" = the first; Shapes: "a {colour} {shape}", its paraphrases, two objects). kind: "latent"
        (evolve the start noise), "prompt" (reword without changing the asked words), "token-gradient"
        (tokens appended to the prompt's token states, learned by gradients through the sampler),
        "latent-gradient" (the start noise, by gradients, within a norm ball) or "random" (the baseline).
        steps: null = the model's. gradient_steps: at most this many backward passes (0-400; null: as
        many as the budget allows). Returns {family, kind, budget, used, gradient_steps, failures,
        failure_rate, corpus (Atlas key or null), corpus_name, rows [{prompt, asked, drawn, agreement,
        cluster, seed, lineage}], notes}."""
        return svc.failure_search(family, budget, kind, seed, steps, gradient_steps=gradient_steps)[0]

    gr.api(api_guard(generate_failure_search), api_name="generate_failure_search", concurrency_id="model-generate",
           concurrency_limit=1)
