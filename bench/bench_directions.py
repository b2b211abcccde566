"""Directions: server time per edited frame and the browser round trip from slider to new image.

1. Server: one edited frame of a cached Shapes source (the generator's resolution, 10 steps, batch 1, guidance
   batched), the edit on every step (the worst case), repeated; p50 / p90. Also per frame when a
   strip of 11 frames is rendered in one batched pass. Target (issue 4): p50 ≤ 150 ms.
2. Browser: Playwright + Chromium on the Directions tab; each sample nudges a direction slider
   (one input event) and waits until the new image has loaded in the page; p50.
   Target: p50 ≤ 400 ms.

Uses the trained Shapes generator when assets/shapes/generator.safetensors exists, otherwise
the same architecture with random weights (the cost is the same).

    python bench/bench_directions.py [--repeats 30] [--threads 1] [--browser-samples 15] [--no-browser]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import Timer  # noqa: F401  (puts the repo root on sys.path)


def shapes_pipe():
    from backends.shapes.generator import WEIGHTS

    if WEIGHTS.exists():
        from backends.shapes.pipeline import load_shapes_pipeline

        return load_shapes_pipeline(), "trained weights"
    from backends.generative.pipeline import LatentDiffusionPipeline
    from backends.shapes.generator import GeneratorConfig, build_generator
    from backends.shapes.text import get_text_encoder

    cfg = GeneratorConfig()
    gen = build_generator(cfg)
    gen.unet.eval()
    for p in gen.unet.parameters():
        p.requires_grad_(False)
    return LatentDiffusionPipeline(gen.unet, gen.make_scheduler(), gen.codec, get_text_encoder(), gen.spatext,
                                   max_tokens=cfg.max_tokens, default_guidance_scale=cfg.guidance_scale), \
        "random weights (no trained generator in assets/)"


def random_direction(traj, seed: int = 0):
    """A random direction in the space `traj` recorded (its layer)."""
    from backends.generative.directions import Direction

    rng = np.random.default_rng(seed)
    d = int(np.prod(traj.h_shape))
    v = rng.standard_normal((traj.steps, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    # large: each 0.1 step of a slider must change the image (an identical image keeps its URL)
    sig = np.array([10 * float(traj.h[i].std()) for i in range(traj.steps)], np.float32)
    return Direction("bench", "bench", "custom", v, traj.timesteps, sig, traj.h_shape, meta={"layer": traj.layer})


def server(pipe, repeats: int) -> dict:
    from backends.generative import directions as D
    from backends.generative import hspace as hspace

    traj = hspace.generate(pipe, "a red circle in the center", seeds=0, steps=10, eta=1.0)
    d = random_direction(traj)
    D.render(pipe, traj, [d], [1.0])  # warm up
    times, cpu = [], []
    for i in range(repeats):
        s = float(np.sin(i) * 4 + 0.1)
        t0, c0 = time.perf_counter(), time.process_time()
        D.render(pipe, traj, [d], [s])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t0 = time.perf_counter()
    D.traversal(pipe, traj, d, strength=3.0, frames=11)
    strip = (time.perf_counter() - t0) / 11
    half = []
    for i in range(max(5, repeats // 3)):
        t0 = time.perf_counter()
        D.render(pipe, traj, [d], [2.0 + i * 0.01], t_range=(0.0, 0.5))
        half.append(time.perf_counter() - t0)
    return {"cpu_p50": float(np.median(cpu)), "p50": float(np.median(times)), "p90": float(np.percentile(times, 90)), "strip_per_frame": strip,
            "first_half_p50": float(np.median(half))}


def browser(pipe, samples: int) -> dict:
    import tempfile

    import gradio as gr
    from playwright.sync_api import sync_playwright

    from app.tabs.directions import build_directions
    from backends.registry import Backends
    from backends.settings import Settings
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, free_port

    settings = Settings.from_env(cache_dir=tempfile.mkdtemp(), port=free_port())
    backends = Backends(settings)
    backends.directions_pipe = pipe
    backends.directions_judge = False
    from app.components.scatter import static_paths

    gr.set_static_paths(static_paths() + [str(backends.cache.root / "thumbs")])
    with gr.Blocks() as demo:
        svc = build_directions(backends)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True)
    from backends.generative import hspace as hspace

    # A direction at the last up block: the same cost per frame as one in h-space, but every slider step
    # visibly changes the image (the shipped generator's decoder nearly ignores the mid block: replacing h
    # by its batch mean moves pixels by 0.2/255; an identical image keeps its URL, so no new image would
    # be drawn to time).
    tr = hspace.generate(pipe, "a shape", seeds=0, steps=10, layer="up_blocks.2")
    svc.add(random_direction(tr))
    img_src = "() => { const i = document.querySelector('#dir-image img'); return i ? i.src : ''; }"
    watch = """() => { window.__loads = []; const root = document.querySelector('#dir-image');
      new MutationObserver(() => { const i = root.querySelector('img'); if (i && !i.__w) { i.__w = 1;
        i.addEventListener('load', () => window.__loads.push(performance.now())); } })
        .observe(root, {subtree: true, childList: true, attributes: true});
      const i = root.querySelector('img'); if (i) { i.__w = 1; i.addEventListener('load', () => window.__loads.push(performance.now())); } }"""
    out = []
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = b.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"http://127.0.0.1:{settings.port}/")
            page.fill("#dir-prompt textarea", "a red circle in the center")
            page.click("#dir-generate")
            page.wait_for_function(f"({img_src})() !== ''", timeout=120_000)
            page.locator("#dir-slot-0 input").click()
            page.keyboard.type("bench")
            page.keyboard.press("Enter")
            page.wait_for_timeout(1500)
            page.evaluate(watch)
            rng = page.locator("#dir-strength-0 input[type=range]")
            rng.focus()
            for i in range(samples + 2):
                n = len(page.evaluate("window.__loads"))
                t0 = page.evaluate("performance.now()")
                page.keyboard.press("ArrowRight")  # always onwards: a value seen before gives a cached image
                page.wait_for_function(f"window.__loads.length > {n}", timeout=60_000)
                t1 = page.evaluate(f"window.__loads[{n}]")  # the first image loaded after this input
                if i >= 2:  # the first two warm up
                    out.append((t1 - t0) / 1000)
                # let everything settle, so the next sample's first load is its own
                while True:
                    m = len(page.evaluate("window.__loads"))
                    page.wait_for_timeout(1200)
                    if len(page.evaluate("window.__loads")) == m:
                        break
            b.close()
    finally:
        demo.close()
    return {"p50": float(np.median(out)), "p90": float(np.percentile(out, 90)), "n": len(out)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--browser-samples", type=int, default=15)
    ap.add_argument("--no-browser", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    pipe, what = shapes_pipe()
    n = sum(p.numel() for p in pipe.unet.parameters())
    from backends.generative.hspace import image_size

    s = image_size(pipe)
    print(f"Shapes generator, {what}: {n / 1e6:.2f}M UNet parameters, {s}x{s}, 10 steps, torch threads {a.threads}")
    r = server(pipe, a.repeats)
    print(f"server, one edited frame (all 10 steps)   p50 {r['p50'] * 1000:7.1f} ms   p90 {r['p90'] * 1000:7.1f} ms"
          f"   (target p50 <= 150 ms)")
    print(f"   CPU time of this process per frame       p50 {r['cpu_p50'] * 1000:7.1f} ms  (wall time above includes waiting for"
          " a core on a shared machine)")
    print(f"server, edit in the first half of steps    p50 {r['first_half_p50'] * 1000:7.1f} ms")
    print(f"server, strip of 11 frames in one batch    {r['strip_per_frame'] * 1000:7.1f} ms per frame")
    if not a.no_browser:
        br = browser(pipe, a.browser_samples)
        print(f"browser, slider input -> new image drawn  p50 {br['p50'] * 1000:7.1f} ms   p90 {br['p90'] * 1000:7.1f} ms"
              f"   over {br['n']} moves (target p50 <= 400 ms)")


if __name__ == "__main__":
    main()
