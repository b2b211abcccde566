"""Evaluate region prompting on Shapes: does each region contain what its prompt asked for?

    python -m backends.shapes.regions_eval --n 200 [--methods spatext,multidiffusion,paint_with_words,text]
                                    (multidiffusion:K = K bootstrapping steps instead of 20% of the steps)
                                    [--steps 20] [--guidance 4] [--regions user|mask|box] [--json out.json]

Two protocols, each a fixed suite of random layouts (seed 0), every method on the same layouts
and seeds (one seed per layout):
- "user" (as people paint): 2-3 areas painted as rectangles, ellipses or free strokes, each
  covering 10-60% of the canvas (backends.shapes.painted.user_layout), each prompted with a
  random "a <colour> <shape>" chosen independently of the area's outline, and the global prompt
  "on a <background> background". No ground-truth image.
- "mask" / "box" (silhouettes): a Shapes scene with 2-3 objects (split "test"); every object
  becomes a region (its visible mask, or with --regions box its bounding box) with the prompt
  "a <colour> <shape>", and the global prompt "on a <background> background".

Per region:
- judge agreement: the judge's object net reads a window centred on the region and names a
  shape and a colour; agreement with the region's prompt (shape, colour, both);
- mask IoU: the object is detected as the pixels that differ from the background (the median
  colour outside every region) inside or just around the region (never inside another region),
  and compared with the region (meaningful for silhouettes; for painted areas the object is
  meant to be smaller than its area);
- inside: a foreground object (at least 4 pixels) overlaps the region and at least 80% of its
  pixels lie in it;
and per image, background: the colour outside every region and object is the prompted one.

Reference rows: "real" scores the rendered ground-truth scenes (the metric's ceiling), "text"
generates from the full caption with positions and sizes and no masks (what words alone give).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

ALL_METHODS = ("spatext", "multidiffusion", "paint_with_words", "text")
DIFF_THRESHOLD = 60.0  # RGB distance from the background that counts as "object"


@dataclass
class Layout:
    image: np.ndarray  # the rendered ground truth (H, W, 3) uint8
    masks: np.ndarray  # regions (R, H, W) bool
    prompts: list[str]
    shapes: list[str]
    colours: list[str]
    global_prompt: str
    caption: str  # full caption with positions (the "text" baseline)
    seed: int
    background: str = ""


def make_suite(n: int, size: int, *, seed: int = 0, regions: str = "mask") -> list[Layout]:
    """n layouts with 2-3 objects each, deterministic in (n, size, seed, regions)."""
    from backends.shapes import scenes

    if regions == "user":
        from backends.shapes.eval_generator import user_layouts

        out = []
        for i, (masks, objs, bg, gp) in enumerate(user_layouts(n, size, seed)):
            caption = " and ".join(o[2] for o in objs) + f" on a {bg} background"
            out.append(Layout(None, masks, [o[2] for o in objs], [o[0] for o in objs], [o[1] for o in objs], gp,
                              caption, seed=1000 + i, background=bg))
        return out
    rng = scenes.split_rng("test", seed)
    out = []
    for i in range(n):
        spec = scenes.sample_scene(rng, n_objects=int(rng.integers(2, 4)))
        img, masks = scenes.render(spec, size)
        if regions == "box":
            boxes = np.zeros_like(masks)
            for j, m in enumerate(masks):
                ys, xs = np.nonzero(m)
                if len(ys):
                    boxes[j, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            from backends.generative.regions import resolve_overlaps

            masks, _ = resolve_overlaps(boxes)
        objs = spec.objects
        out.append(Layout(img, masks, [f"a {o.colour} {o.shape}" for o in objs], [o.shape for o in objs],
                          [o.colour for o in objs], f"on a {spec.background} background",
                          scenes.canonical_caption(spec), seed=1000 + i, background=spec.background))
    return out


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(m, structure=np.ones((2 * r + 1, 2 * r + 1), bool)) if r > 0 else m


def detect_objects(image: np.ndarray, masks: np.ndarray, *, margin: int | None = None,
                   threshold: float = DIFF_THRESHOLD) -> np.ndarray:
    """Per region, the pixels that differ from the background inside or around it: bool (R, H, W).

    Background colour: median of the pixels outside every (dilated) region, or of the image
    border if the regions cover everything.
    """
    img = np.asarray(image, np.float32)
    h = img.shape[0]
    margin = max(1, h // 16) if margin is None else margin
    grown = np.stack([_dilate(m, margin) for m in masks])
    outside = ~grown.any(0)
    if outside.sum() < 0.05 * outside.size:
        outside = np.zeros_like(outside)
        outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    bg = np.median(img[outside], axis=0)
    diff = np.linalg.norm(img - bg, axis=-1) > threshold
    out = np.zeros_like(masks, dtype=bool)
    for i in range(len(masks)):
        others = np.zeros_like(diff) if len(masks) == 1 else np.delete(masks, i, 0).any(0)
        out[i] = diff & grown[i] & ~others
    return out


def object_components(image: np.ndarray, masks: np.ndarray, *, threshold: float = DIFF_THRESHOLD) -> np.ndarray:
    """Per region, the whole foreground objects it holds: the connected components of the pixels that
    differ from the background (the median colour outside every grown region, as in detect_objects),
    each given to the region it overlaps most; objects of different colours that touch stay apart
    (colour_classes). bool (R, H, W); unlike detect_objects, an object is not cut at the region's
    edge, so whether it lies inside its region can be read off."""

    img = np.asarray(image, np.float32)
    margin = max(1, img.shape[0] // 16)
    outside = ~np.stack([_dilate(m, margin) for m in masks]).any(0)
    if outside.sum() < 0.05 * outside.size:
        outside = np.zeros_like(outside)
        outside[0, :] = outside[-1, :] = outside[:, 0] = outside[:, -1] = True
    bg = np.median(img[outside], axis=0)
    return assign_components(np.linalg.norm(img - bg, axis=-1) > threshold, masks, colours=colour_classes(img))


def colour_classes(image: np.ndarray) -> np.ndarray:
    """Each pixel's nearest object colour of the Shapes world (index into scenes.COLOURS): int (H, W).
    Two objects of different colours that touch are then still two objects."""
    from backends.shapes import scenes

    pal = np.asarray(list(scenes.COLOURS.values()), np.float32)
    img = np.asarray(image, np.float32)
    return np.argmin(((img[..., None, :] - pal) ** 2).sum(-1), axis=-1)


def assign_components(foreground: np.ndarray, masks: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """Each connected component of `foreground` (H, W) given whole to the region (R, H, W) it overlaps
    most (components touching no region are dropped): bool (R, H, W). With `colours` (a class per
    pixel, colour_classes), a component is connected pixels of one class: touching objects of
    different colours are told apart."""
    from scipy import ndimage

    if colours is None:
        groups = [foreground]
    else:
        groups = [foreground & (colours == c) for c in np.unique(colours[foreground])]
    out = np.zeros(masks.shape, bool)
    for fg in groups:
        lab, n = ndimage.label(fg)
        for c in range(1, n + 1):
            comp = lab == c
            ov = (masks & comp[None]).reshape(len(masks), -1).sum(1)
            if ov.max() > 0:
                out[int(np.argmax(ov))] |= comp
    return out


def inside_region(component: np.ndarray, mask: np.ndarray) -> bool:
    """At least 4 object pixels, 80% of them in the region grown by one pixel (anti-aliased edges)."""
    area = component.sum()
    return bool(area >= 4 and (component & _dilate(mask, 1)).sum() >= 0.8 * area)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def score_image(judge, image: np.ndarray, lay: Layout) -> list[dict]:
    """One row per region: shape_ok, colour_ok, both_ok, iou, inside, bg_ok (the image's)."""
    from backends.shapes.eval_generator import background_colour

    df = judge.predict_objects(image, lay.masks)
    det = detect_objects(image, lay.masks)
    comp = object_components(image, lay.masks)
    bg_ok = background_colour(image, ~lay.masks.any(0)) == lay.background if lay.background else False
    rows = []
    for j in range(len(lay.masks)):
        s_ok = df["shape"].iat[j] == lay.shapes[j]
        c_ok = df["colour"].iat[j] == lay.colours[j]
        inside = inside_region(comp[j], lay.masks[j])
        rows.append({"shape_ok": bool(s_ok), "colour_ok": bool(c_ok), "both_ok": bool(s_ok and c_ok),
                     "iou": iou(det[j], lay.masks[j]), "inside": inside, "bg_ok": bool(bg_ok)})
    return rows


def generate_one(pipe, lay: Layout, method: str, *, steps: int, guidance: float) -> np.ndarray:
    import torch

    from backends.generative import regions as R
    from backends.generative.pipeline import to_uint8

    g = torch.Generator().manual_seed(lay.seed)
    kw = dict(num_inference_steps=steps, guidance_scale=guidance, generator=g)
    masks = lay.masks.astype(np.float32)
    if method.endswith("+plan"):  # the object planner first: each area becomes its prompt's shape, fitted inside
        from backends.shapes.region_planner import plan_objects

        masks, _ = plan_objects(lay.masks, lay.prompts, model_size=lay.masks.shape[-1])
        method = method[:-len("+plan")]
    if method == "spatext":
        out = R.spatext(pipe, lay.global_prompt, masks, lay.prompts, **kw)
    elif method.split(":")[0] == "multidiffusion":  # "multidiffusion:12" = 12 bootstrapping steps
        boot = int(method.split(":")[1]) if ":" in method else None
        out = R.multidiffusion(pipe, lay.global_prompt, masks, lay.prompts, bootstrap_steps=boot, **kw)
    elif method == "paint_with_words":
        out = R.paint_with_words(pipe, lay.global_prompt, masks, lay.prompts, **kw)
    elif method == "text":
        out = pipe(lay.caption, **kw)
    else:
        raise ValueError(f"Unknown method: {method!r}. Must be one of: {', '.join(ALL_METHODS)} "
                         "(each but text also with '+plan': the object planner first)")
    return to_uint8(out.images[0])


def summarise(rows: list[dict]) -> dict:
    if not rows:
        return {}
    a = {k: np.asarray([r[k] for r in rows], np.float64) for k in rows[0]}
    return {"regions": len(rows), "shape": a["shape_ok"].mean(), "colour": a["colour_ok"].mean(),
            "both": a["both_ok"].mean(), "iou": a["iou"].mean(), "iou_ge_0.5": (a["iou"] >= 0.5).mean(),
            "inside": a["inside"].mean(), "background": a["bg_ok"].mean()}


def format_table(results: dict) -> str:
    head = "| method | regions | shape | colour | shape+colour | inside | background | mask IoU | IoU ≥ 0.5 | s / image |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        lines.append(f"| {m} | {r['regions']} | {r['shape']:.3f} | {r['colour']:.3f} | {r['both']:.3f} | "
                     f"{r['inside']:.3f} | {r['background']:.3f} | "
                     f"{r['iou']:.3f} | {r['iou_ge_0.5']:.3f} | {r.get('seconds', float('nan')):.2f} |")
    return "\n".join(lines)


def run(n: int = 200, methods=ALL_METHODS, *, steps: int = 20, guidance: float = 4.0, regions: str = "mask",
        seed: int = 0, pipe=None, judge=None, log=print) -> dict:
    """Evaluate; returns {method: summary} with "real" first."""
    from backends.shapes.judge import load_judge

    if pipe is None:
        from backends.shapes.pipeline import load_shapes_pipeline

        pipe = load_shapes_pipeline()
    judge = judge or load_judge()
    size = pipe.latent_size * int(getattr(pipe.codec.config, "patch", 0) or 8)
    suite = make_suite(n, size, seed=seed, regions=regions)
    results = {}
    if regions != "user":  # the rendered ground truth: the metric's ceiling
        results["real"] = summarise([r for lay in suite for r in score_image(judge, lay.image, lay)])
        results["real"]["seconds"] = 0.0
    for m in methods:
        rows, t0 = [], time.perf_counter()
        for i, lay in enumerate(suite):
            rows += score_image(judge, generate_one(pipe, lay, m, steps=steps, guidance=guidance), lay)
            if (i + 1) % 25 == 0:
                log(f"{m}: {i + 1}/{n} layouts, {time.perf_counter() - t0:.0f}s")
        results[m] = summarise(rows)
        results[m]["seconds"] = (time.perf_counter() - t0) / max(1, n)
    return results


def record(results: dict, *, n: int, guidance: float, steps: int, config_path=None) -> None:
    """Write the user-like protocol's per-method scores into the generator's JSON config."""
    from backends.shapes.generator import record_metric

    record_metric("regions_user", {
        "n_layouts": n, "guidance": guidance, "steps": steps,
        "methods": {m: {k: round(float(r[k]), 3) for k in ("both", "inside", "background", "shape", "colour")}
                    for m, r in results.items() if m != "real"}}, config_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backends.shapes.regions_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="layouts (default 200)")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--regions", choices=("user", "mask", "box"), default="user",
                   help="user: painted areas as people paint them (default); mask / box: object silhouettes / boxes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--record", action="store_true",
                   help="with --regions user: store each method's scores in the shipped generator's config "
                        "(generator.json metrics.regions_user), where the Regions tab reads them to tell users "
                        "which methods follow painted areas on this model")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    def known(m: str) -> bool:
        base = m[:-len("+plan")] if m.endswith("+plan") and not m.startswith("text") else m
        return base.split(":")[0] in ALL_METHODS and (":" not in base or base.split(":")[1].isdigit())

    bad = [m for m in methods if not known(m)]
    if bad:
        p.error(f"unknown method {bad[0]!r}; choose from {', '.join(ALL_METHODS)} (each but text also with '+plan')")
    if args.n < 1:
        p.error(f"--n must be at least 1, but is {args.n}")
    import torch

    torch.set_num_threads(max(1, args.threads))
    try:
        results = run(args.n, methods, steps=args.steps, guidance=args.guidance, regions=args.regions, seed=args.seed,
                      log=lambda s: print(s, file=sys.stderr))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from backends.shapes.generator import load_generator

    trained = load_generator().config.trained_steps
    print(f"Regions on Shapes: {args.n} layouts (2-3 regions, regions={args.regions}), {args.steps} steps, "
          f"guidance {args.guidance}, generator trained {trained} steps")
    print(format_table(results))
    if args.record and args.regions == "user":
        record(results, n=args.n, guidance=args.guidance, steps=args.steps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "generator_steps": trained,
                       "results": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in results.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
