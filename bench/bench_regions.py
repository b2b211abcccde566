"""Region prompting latency on the Shapes model: 3 regions, 20 DDIM steps, batch 1, guidance on.

Times the whole call the Regions tab makes (prompt encoding, masks, sampling, decoding) for
SpaText (one UNet batch of 2 per step), MultiDiffusion (one batch of 2 x (3 regions + global)
per step) and paint-with-words; p50/p90 wall time over repeats, plus CPU time per call (what
the call costs when the cores are shared with other work).

Targets (issue 5), 2 cores: SpaText <= 0.6 s; MultiDiffusion <= 2 s.

    python bench/bench_regions.py [--threads 2] [--repeats 15] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = {"spatext": 0.6, "multidiffusion": 2.0}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    import torch

    from backends.generative import regions as R
    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline()
    side = pipe.latent_size * pipe.codec.patch
    masks = np.zeros((3, side, side), np.float32)
    masks[0, : side // 2, : side // 2] = masks[1, : side // 2, side // 2:] = 1
    masks[2, side // 2 + side // 8:, side // 4: 3 * side // 4] = 1
    prompts = ["a red circle", "a blue square", "a green star"]
    glob = "on a black background"
    fns = {
        "spatext": lambda g: R.spatext(pipe, glob, masks, prompts, num_inference_steps=args.steps, generator=g),
        "multidiffusion": lambda g: R.multidiffusion(pipe, glob, masks, prompts, num_inference_steps=args.steps,
                                                     generator=g),
        "paint_with_words": lambda g: R.paint_with_words(pipe, glob, masks, prompts, num_inference_steps=args.steps,
                                                         generator=g),
    }
    results = {}
    for name, fn in fns.items():
        fn(torch.Generator().manual_seed(0))  # warm-up (text encoder cache, allocator)
        wall, cpu = [], []
        for r in range(args.repeats):
            g = torch.Generator().manual_seed(r)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(g)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        res = {"p50_s": round(float(np.median(wall)), 4), "p90_s": round(float(np.percentile(wall, 90)), 4),
               "cpu_p50_s": round(float(np.median(cpu)), 4)}
        if name in TARGETS:
            res["target_s"] = TARGETS[name]
        results[name] = res
        tgt = f"   target <= {TARGETS[name]:.1f} s" if name in TARGETS else ""
        print(f"{name:>17}: p50 {res['p50_s'] * 1000:7.1f} ms   p90 {res['p90_s'] * 1000:7.1f} ms"
              f"   cpu p50 {res['cpu_p50_s'] * 1000:7.1f} ms{tgt}", flush=True)
    print(json.dumps({"threads": args.threads, "image_size": side, "regions": 3, "steps": args.steps, **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
