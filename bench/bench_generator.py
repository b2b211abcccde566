"""Shapes generator latency: one image (batch 1) with 10 and 20 DDIM steps under the model's
default guidance (autoguidance: the model and its guide model, two UNet calls a step) and under
classifier-free guidance (one batched call of 2), p50 over repeats, plus CPU time per call (what
the call costs when cores are shared), and the ratio of the two methods.

Targets (issue 3), 2 cores: 20 steps <= 0.5 s; 10 steps <= 0.25 s.

    python bench/bench_generator.py [--threads 2] [--repeats 15] [--regions]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--regions", action="store_true", help="also time a 3-region SpaText map")
    args = p.parse_args()

    import torch

    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline()
    prompt = "a large red circle in the center on a black background"
    pipe(prompt, num_inference_steps=5, generator=torch.Generator().manual_seed(0))  # warm-up (+ text cache)
    cases = []
    for steps in (20, 10):
        for m in pipe.guidance_methods[::-1]:
            cases.append((f"{steps} steps, {m}", dict(num_inference_steps=steps, guidance_method=m)))
    if args.regions:
        side = pipe.latent_size * pipe.codec.patch
        masks = np.zeros((3, side, side), bool)
        masks[0, : side // 2, : side // 2] = masks[1, : side // 2, side // 2:] = masks[2, side // 2:, :] = True
        cases.append(("20 steps, 3 regions", dict(num_inference_steps=20, region_masks=masks,
                                                  region_prompts=["a red circle", "a blue square", "a green star"])))
    results = {}
    for name, kw in cases:
        wall, cpu = [], []
        for r in range(args.repeats):
            g = torch.Generator().manual_seed(r)
            t0, c0 = time.perf_counter(), time.process_time()
            pipe(prompt, guidance_scale=3.5, generator=g, **kw)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        results[name] = {"p50_s": round(float(np.median(wall)), 4), "p90_s": round(float(np.percentile(wall, 90)), 4),
                         "cpu_p50_s": round(float(np.median(cpu)), 4)}
        print(f"{name:>22}: p50 {results[name]['p50_s'] * 1000:7.1f} ms   p90 {results[name]['p90_s'] * 1000:7.1f} ms"
              f"   cpu p50 {results[name]['cpu_p50_s'] * 1000:7.1f} ms", flush=True)
    for steps in (20, 10):
        a, c = results.get(f"{steps} steps, auto"), results.get(f"{steps} steps, cfg")
        if a and c:
            print(f"{steps} steps: autoguidance / classifier-free = {a['p50_s'] / c['p50_s']:.2f}x")
    print(json.dumps({"threads": args.threads, "image_size": pipe.latent_size * pipe.codec.patch, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
