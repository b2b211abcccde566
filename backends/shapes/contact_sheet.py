"""A contact sheet of the Shapes generator: 40 prompts (5 shapes x 8 colours) x 3 seeds, each
labelled with its prompt and, where the judge disagrees, what it saw instead.

    python -m backends.shapes.contact_sheet [--weights PATH] [--out docs/images/generator-contact-sheet.png]
                                            [--seeds 3] [--scale 3]

Judge a model by its outputs as well as its numbers: the sheet shows at a glance which shapes
come out as blobs. Sampled with the model's own defaults (steps, guidance, method).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def sample_sheet(pipe, seeds: int = 3, judge=None):
    """(prompts, images (40, seeds, H, W, 3) uint8, judged (40, seeds) 'shape colour' strings)."""
    import torch

    from backends.generative.pipeline import to_uint8
    from backends.shapes import scenes

    prompts = [f"a {c} {s}" for s in scenes.SHAPES for c in scenes.COLOURS]
    imgs = np.zeros((len(prompts), seeds) + (0,), np.uint8)
    rows = []
    for k in range(seeds):
        g = torch.Generator().manual_seed(1000 + k)
        out = pipe(prompts, generator=g)
        rows.append(to_uint8(out.images))
    imgs = np.stack(rows, 1)
    judged = np.full((len(prompts), seeds), "", object)
    if judge is not None:
        flat = imgs.reshape((-1,) + imgs.shape[2:])
        pred = judge.predict(flat)
        judged = np.asarray([f"{s} {c}" for s, c in zip(pred["shape"], pred["colour"])], object).reshape(judged.shape)
    return prompts, imgs, judged


def render_sheet(prompts, imgs, judged, *, scale: int = 3, title: str = ""):
    """A PIL image: one row per shape, one column block per colour, seeds side by side."""
    from PIL import Image, ImageDraw

    n, seeds, h, w, _ = imgs.shape
    cols = 8
    cell_w, cell_h = seeds * w * scale + 8, h * scale + 30
    top = 24 if title else 4
    sheet = Image.new("RGB", (cols * cell_w + 8, (n // cols) * cell_h + top + 4), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((8, 6), title, fill=(20, 20, 20))
    for i, prompt in enumerate(prompts):
        r, c = divmod(i, cols)
        x0, y0 = 8 + c * cell_w, top + r * cell_h
        want = prompt.split(" ", 1)[1]  # "red circle"
        wc, ws = want.split(" ")
        wrong = 0
        for k in range(seeds):
            tile = Image.fromarray(imgs[i, k]).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(tile, (x0 + k * w * scale, y0))
            if judged[i, k]:
                js, jc = judged[i, k].split(" ", 1)
                if (js, jc) != (ws, wc):
                    wrong += 1
                    draw.rectangle([x0 + k * w * scale, y0, x0 + (k + 1) * w * scale - 1, y0 + h * scale - 1],
                                   outline=(228, 0, 43), width=2)
        label = prompt if not wrong else f"{prompt}  ({wrong} off)"
        draw.text((x0, y0 + h * scale + 3), label, fill=(20, 20, 20) if not wrong else (180, 0, 30))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backends.shapes.contact_sheet", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="generator weights (default: the shipped ones)")
    p.add_argument("--out", default="docs/images/generator-contact-sheet.png")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    from backends.shapes.generator import load_generator
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline(path=args.weights)
    steps = load_generator(args.weights).config.trained_steps
    prompts, imgs, judged = sample_sheet(pipe, args.seeds, load_judge())
    ok = sum(j == f"{p.split(' ')[2]} {p.split(' ')[1]}" for p, row in zip(prompts, judged) for j in row)
    title = (f"Shapes generator, {steps:,} training steps, defaults ({pipe.default_guidance_method} "
             f"{pipe.default_guidance_scale}, {pipe.default_steps} steps); judge agrees on {ok} of {judged.size}; "
             "red frame: judged otherwise")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    render_sheet(prompts, imgs, judged, scale=args.scale, title=title).save(args.out, optimize=True)
    print(f"{args.out}: {title}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
