"""Two objects from one prompt: how often both asked objects are drawn right (issue #17's two-object
report), from the words alone and with the prompt laid out first (prompt_layout).

    python -m backends.shapes.two_objects_eval [--n 200] [--seed 0] [--threads 2] [--json OUT]

Prompts "a {colour} {shape} and a {colour2} {shape2}" (two different shapes, colours drawn freely;
every second one ends "on a black background"), one seed each, the model's defaults (20 steps,
guidance 3.5; the text-only row with the model's own guidance method, the laid-out row with
classifier-free guidance, as the Generate tab does). Scored by the failure search's surrogate
(backends/shapes/failures.py): the two largest foreground objects, each read by the judge's object
net; a prompt counts when both asked (shape, colour) pairs are among them. The laid-out row also
reports the geometric scorer's reading of the shape in each layout area (``area_shapes``), as a check
on the judge's object net, which misreads squares drawn with bent sides.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def two_object_prompts(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    from backends.shapes import scenes

    rng = np.random.default_rng(np.random.SeedSequence([0x2B, seed]))
    C, S = list(scenes.COLOURS), list(scenes.SHAPES)
    prompts, asked = [], []
    for i in range(n):
        s1, s2 = rng.choice(len(S), 2, replace=False)
        c1, c2 = rng.integers(len(C), size=2)
        asked.append({"shape": S[s1], "colour": C[c1], "shape2": S[s2], "colour2": C[c2]})
        prompts.append(f"a {C[c1]} {S[s1]} and a {C[c2]} {S[s2]}" + (" on a black background" if i % 2 else ""))
    return prompts, asked


def run(n: int = 200, seed: int = 0, pipe=None, surrogate=None) -> dict:
    import torch

    from backends.generative.pipeline import to_uint8
    from backends.shapes.failures import JudgeSurrogate
    from backends.shapes.judge import load_judge
    from backends.shapes.prompt_layout import layout_from_prompt

    if pipe is None:
        from backends.shapes.pipeline import load_shapes_pipeline

        pipe = load_shapes_pipeline()
    surrogate = surrogate or JudgeSurrogate(load_judge())
    size = pipe.latent_size * pipe.codec.patch
    prompts, asked = two_object_prompts(n, seed)
    out = {}
    for mode in ("text", "layout"):
        t0, images = time.perf_counter(), []
        for i, p in enumerate(prompts):
            g = torch.Generator().manual_seed(seed * 100_000 + i)
            if mode == "text":
                res = pipe(p, generator=g)
            else:
                lay = layout_from_prompt(p, size)
                res = pipe(lay.global_prompt, region_masks=lay.maps, region_prompts=lay.phrases, generator=g,
                           guidance_method="cfg")
            images.append(to_uint8(res.images)[0])
        sc = surrogate.score(np.stack(images), asked)
        out[mode] = {"both_right": float(1 - sc.failed.mean()), "n": n,
                     "seconds_per_image": (time.perf_counter() - t0) / n}
        if mode == "layout":  # a second opinion on the shapes: each area read by the geometric scorer
            out[mode]["geometric_shapes_right"] = float(np.mean([
                sorted(area_shapes(im, layout_from_prompt(p, size).maps)) == sorted([a["shape"], a["shape2"]])
                for im, p, a in zip(images, prompts, asked)]))
    return out


def area_shapes(image: np.ndarray, maps) -> list[str]:
    """The geometric scorer's shape in each layout area (grown by 2 pixels, the rest painted with the
    border colour): a reading of laid-out objects that does not go through the judge."""
    from scipy import ndimage

    from backends.shapes.geometric_scorer import classify_shapes

    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    bg = np.median(border, 0).astype(np.uint8)
    alone = [np.where(ndimage.binary_dilation(np.asarray(m) > 0.5, iterations=2)[..., None], image, bg) for m in maps]
    return classify_shapes(np.stack(alone))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.n < 1:
        p.error(f"--n must be at least 1, but is {args.n}")
    import torch

    torch.set_num_threads(max(1, args.threads))
    res = run(args.n, args.seed)
    for mode, r in res.items():
        geo = f"; geometric scorer: both shapes right {r['geometric_shapes_right']:.3f}" if "geometric_shapes_right" in r else ""
        print(f"{mode}: both objects right {r['both_right']:.3f} of {r['n']} prompts, {r['seconds_per_image']:.2f} s / image{geo}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
