"""Judge vs geometric scorer on the generator's canonical single-object prompts.

    PYTHONPATH=. python scripts/compare_shape_scorers.py --weights runs/cand-102k/generator.safetensors \
        [--n 500] [--out-png square_disagreements.png] [--json out.json] [--threads 1]

Generates exactly what ``backends.shapes.eval_generator.eval_single`` generates for its canonical
prompts (it is called, with the model's default steps, guidance, eta and guidance method, seed 0,
batches of 50; a recording wrapper around the judge keeps the images it scores), then reads every
image's shape with the learned judge (backends.shapes.judge) and with the hand-written geometric
scorer (backends.shapes.geometric_scorer) and prints, per prompted shape, the share each gets
right (shape only, colour ignored), and for the square prompts the judge-vs-geometric matrix.
--out-png saves the square prompts where the two disagree (3x upscaled, numbered in prompt order,
labelled "J:<judge> G:<geometric>").
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

ABBREV = {"circle": "circ", "square": "sq", "triangle": "tri", "star": "star", "cross": "cross", "none": "none"}


class _RecordingJudge:
    """The judge, keeping the images it is asked to read."""

    def __init__(self, judge):
        self.judge = judge
        self.images = None
        self.pred = None

    def predict(self, images, *args, **kwargs):
        self.images = np.asarray(images)
        self.pred = self.judge.predict(images, *args, **kwargs)
        return self.pred


def disagreement_grid(images, labels, scale: int = 3, cols: int = 10):
    """A PIL image: the images upscaled `scale`x (nearest), each with its label underneath."""
    from PIL import Image, ImageDraw

    h, w = images.shape[1] * scale, images.shape[2] * scale
    strip = 12
    rows = max(1, -(-len(images) // cols))
    sheet = Image.new("RGB", (cols * (w + 4), rows * (h + strip + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (im, lab) in enumerate(zip(images, labels)):
        x, y = (i % cols) * (w + 4), (i // cols) * (h + strip + 4)
        sheet.paste(Image.fromarray(im).resize((w, h), Image.NEAREST), (x, y))
        draw.text((x + 1, y + h), lab, fill=(0, 0, 0))
    return sheet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/compare_shape_scorers.py")
    p.add_argument("--weights", default=None, help="generator .safetensors (default: the shipped one in assets/shapes/)")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-png", default=None, help="save the disagreeing square prompts here")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    import pandas as pd
    import torch

    from backends.shapes import scenes
    from backends.shapes.eval_generator import _to_uint8, eval_single
    from backends.shapes.geometric_scorer import CIRCLE_MAX_LOBE, CROSS_MIN_NOTCH, classify_features, describe_shapes
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline(path=args.weights)
    judge = _RecordingJudge(load_judge())
    method = pipe.resolve_guidance_method(None)
    res = eval_single(pipe, args.n, steps=pipe.default_steps, guidance=pipe.default_guidance_scale, seed=args.seed,
                      judge=judge, eta=pipe.default_eta, method=method)
    print("eval_single (judge, shape and colour):", json.dumps({k: res[k] for k in ("n", "shape", "colour", "joint")}))

    imgs = _to_uint8(judge.images)
    specs = scenes.make_batch(args.n, seed=args.seed, split="test", single=True, size=8).specs
    want = np.asarray([s.objects[0].shape for s in specs])
    geo = describe_shapes(imgs)
    df = pd.DataFrame({"prompt": want, "judge": judge.pred["shape"].to_numpy(), "geometric": geo["shape"].to_numpy()})
    df["judge_ok"] = df.judge == df.prompt
    df["geo_ok"] = df.geometric == df.prompt
    df["both_ok"] = df.judge_ok & df.geo_ok
    df["agree"] = df.judge == df.geometric
    df["prompted_size"] = [s.objects[0].size for s in specs]
    per = df.groupby("prompt").agg(n=("prompt", "count"), judge=("judge_ok", "mean"), geometric=("geo_ok", "mean"),
                                   both=("both_ok", "mean"), agree=("agree", "mean"))
    print(f"\nshape accuracy per prompted shape (n={args.n}; steps {pipe.default_steps}, guidance "
          f"{pipe.default_guidance_scale}, eta {pipe.default_eta}, {method}):")
    print(per.round(3).to_string())
    print(f"all: judge {df.judge_ok.mean():.3f}  geometric {df.geo_ok.mean():.3f}  "
          f"judge==geometric {(df.judge == df.geometric).mean():.3f}")

    print("\nprompted shape (rows) vs geometric reading (columns), all prompts:")
    print(pd.crosstab(df.prompt, df.geometric).to_string())
    sq = df.prompt == "square"
    print("\nsquare prompts: judge (rows) vs geometric (columns):")
    matrix = pd.crosstab(df.judge[sq], df.geometric[sq], margins=True)
    print(matrix.to_string())
    print("\nsquare prompts by prompted size:")
    print(df[sq].groupby("prompted_size").agg(n=("prompt", "count"), judge=("judge_ok", "mean"),
                                              geometric=("geo_ok", "mean")).round(3).to_string())
    feats = geo[sq.to_numpy()].assign(judge=df.judge[sq].to_numpy())
    print("\nsquare prompts, geometric features (median) by geometric reading:")
    print(feats.groupby("shape")[["area", "a3", "a4", "a5", "notch4", "solidity"]].median().round(3).to_string())

    print("\ngeometric accuracy on square prompts with its thresholds moved:")
    for lobe_f, notch_f in ((1, 1), (0.75, 1), (1.25, 1), (1, 0.75), (1, 1.25)):
        read = [classify_features(row, circle_max_lobe=lobe_f * CIRCLE_MAX_LOBE, cross_min_notch=notch_f * CROSS_MIN_NOTCH)
                for _, row in geo[sq.to_numpy()].iterrows()]
        print(f"  CIRCLE_MAX_LOBE x{lobe_f:<4} CROSS_MIN_NOTCH x{notch_f:<4}: {np.mean(np.asarray(read) == 'square'):.3f}")

    idx = np.flatnonzero(sq.to_numpy() & (df.judge != df.geometric).to_numpy())
    if args.out_png:
        labels = [f"{i} J:{ABBREV[df.judge[i]]} G:{ABBREV[df.geometric[i]]}" for i in idx]
        disagreement_grid(imgs[idx], labels).save(args.out_png)
        print(f"\n{len(idx)} disagreeing square prompts saved to {args.out_png} (prompt index, judge, geometric)")
    if args.json:
        out = {"weights": args.weights, "n": args.n, "eval_single": res,
               "per_shape": per.reset_index().to_dict(orient="records"),
               "square_matrix": {str(r): {str(c): int(v) for c, v in row.items()} for r, row in matrix.iterrows()},
               "square_disagreements": [int(i) for i in idx]}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
