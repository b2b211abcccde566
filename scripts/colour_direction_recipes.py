"""Colour → blue in h-space on a Shapes generator: which recipe for the direction changes the colour
and keeps the shape, and how far the best possible edit in h gets (docs/directions.md, issue #17).

    PYTHONPATH=. python scripts/colour_direction_recipes.py [--weights PATH] [--threads 1]

Protocol of the quality bar (tests/test_directions.py): a bank of 120 test prompts (seed 0, 10 steps),
24 sources (prompt seed 7, sample seeds from 1000); "colour changed" = judged blue among the sources
not judged blue before, "shape kept" = the judged shape unchanged. Prints one line per recipe with
the two shares at 1 / 2 / 4x the direction's default strength. About 2 minutes on one thread.
"""
from __future__ import annotations

import argparse
import re
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None, help="generator .safetensors (default: the shipped one)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from backends.generative import directions as D
    from backends.generative import hspace
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe, judge = load_shapes_pipeline(path=args.weights), load_judge()
    prompts, factors = D.shapes_prompts(120, seed=0)
    src_prompts, src_factors = D.shapes_prompts(24, seed=7)

    def score(src, base, imgs):
        after = judge.predict(imgs)
        keep = base["colour"].to_numpy() != "blue"
        return (float(np.mean(after["colour"].to_numpy()[keep] == "blue")),
                float(np.mean(after["shape"].to_numpy() == base["shape"].to_numpy())))

    def curve(name, d, src, base, delta_half, **kw):
        out = []
        for m in (1, 2, 4):
            imgs = D.render(pipe, src, [d], np.full((src.batch, 1), d.default_strength * m), delta_half=delta_half, **kw)
            c, k = score(src, base, imgs)
            out.append(f"{m}x {c:.0%}/{k:.0%}")
        print(f"{name:58s} {'  '.join(out)}", flush=True)

    print("recipe (h from / Δh to)                                    colour changed / shape kept at 1, 2, 4x")
    for half, dh in (("uncond", "both"), ("cond", "cond")):
        bank = D.sample_bank(pipe, prompts, seeds=0, steps=10, factors=factors, batch=60, record_half=half)
        bank.judged = judge.predict(bank.images)
        src = hspace.generate(pipe, src_prompts, seeds=1000, steps=10, record_half=half)
        base = judge.predict(src.images)
        d = D.factor_direction(bank, "colour", "blue", labels="judge")
        curve(f"mean(h+) - mean(h-), judge labels ({half} / {dh})", d, src, base, dh)
        # paired: each bank prompt against itself with the colour word replaced by "blue", same seed
        cols = factors["colour"].astype(str).to_numpy()
        idx = [i for i in range(len(prompts)) if cols[i] != "blue" and re.search(rf"\b{cols[i]}\b", prompts[i])]
        blue = [re.sub(rf"\b{cols[i]}\b", "blue", prompts[i]) for i in idx]
        pb = D.sample_bank(pipe, [prompts[i] for i in idx] + blue, seeds=idx + idx, steps=10, batch=60, record_half=half)
        n = len(idx)
        dp = D.mean_difference(pb, np.arange(n, 2 * n), np.arange(n), id="paired", name="paired")
        dp.sigma = bank.sigma_along(dp.vectors, dp.timesteps)
        dp.default_strength = float(np.median(np.linalg.norm((pb.h[n:] - pb.h[:n]).mean(0), axis=1) / dp.sigma))
        curve(f"paired prompts, mean of the differences ({half} / {dh})", dp, src, base, dh)
        if half == "cond":
            curve("mean(h+) - mean(h-), asymmetric, first half of the steps", d, src, base, dh, asymmetric=True,
                  t_range=(0.0, 0.5))
    # the oracle: each source gets its own per-step Δh to its blue-prompt twin (same seed), h_twin - h_source
    # read off the two unedited runs (the twin's exact h at the first step; after it, added to the edited run's h)
    cols = src_factors["colour"].astype(str).to_numpy()
    idx = [i for i in range(len(src_prompts)) if cols[i] != "blue" and re.search(rf"\b{cols[i]}\b", src_prompts[i])]
    seeds = [1000 + i for i in idx]
    src = hspace.generate(pipe, [src_prompts[i] for i in idx], seeds=seeds, steps=10, record_half="cond")
    twin = hspace.generate(pipe, [re.sub(rf"\b{cols[i]}\b", "blue", src_prompts[i]) for i in idx], seeds=seeds,
                           steps=10, record_half="cond")
    base = judge.predict(src.images)
    for frac in (1.0, 0.3):
        out = []
        for m in (1, 2):
            delta = (twin.h - src.h) * m
            delta[max(1, int(np.ceil(frac * len(delta)))):] = 0
            c, k = score(src, base, hspace.edit(pipe, src, delta, delta_half="cond"))
            out.append(f"{m}x {c:.0%}/{k:.0%}")
        print(f"{f'oracle: per-step Δh to the blue twin, first {frac:.0%} of the steps (cond / cond)':58s} {'  '.join(out)}"
              f"   ({len(idx)} sources; the twins themselves are judged blue: "
              f"{np.mean(judge.predict(twin.images)['colour'] == 'blue'):.0%})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
