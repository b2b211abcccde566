"""Evaluate the Shapes generator on held-out prompts.

    python -m backends.shapes.eval_generator [--n 500] [--regions 200] [--steps N] [--guidance G]
                                             [--guidance-method cfg|auto] [--weights PATH] [--json OUT]

Prints, on test-split seeds:
- single-object prompts (canonical wording, and paraphrases): share of samples whose judged
  shape and colour match the prompt (and each separately);
- region maps (2-3 regions, object phrases as region prompts, the scene's canonical caption as
  the global prompt): per-region shape+colour agreement (judge on each region) and IoU of the
  detected object with its painted region.

Scoring uses ``backends.shapes.judge`` when its weights exist; otherwise a colour-only heuristic
(nearest named colour of the pixels that differ from the border colour), labelled as such.
Single-object samples are also read by the non-learned geometric scorer
(``backends.shapes.geometric_scorer``; "geometric" in the results): the judge reads four-pointed
stars as stars and misreads some rotated squares, the geometric scorer does neither.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _judge():
    try:
        from backends.shapes.judge import load_judge

        return load_judge()
    except Exception:
        return None


def _to_uint8(images) -> np.ndarray:
    a = np.asarray(images)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return a


def foreground(image: np.ndarray, thr: float = 60.0) -> np.ndarray:
    """bool (H, W): pixels far (RGB L2 > thr) from the median border colour."""
    im = image.astype(np.float32)
    border = np.concatenate([im[0], im[-1], im[:, 0], im[:, -1]])
    bg = np.median(border, axis=0)
    return np.linalg.norm(im - bg, axis=-1) > thr


def heuristic_colour(image: np.ndarray) -> str:
    from backends.shapes import scenes

    fg = foreground(image)
    if fg.sum() < 4:
        return "none"
    c = np.median(image[fg].astype(np.float32), axis=0)
    names = list(scenes.COLOURS)
    pal = np.asarray([scenes.COLOURS[k] for k in names], np.float32)
    return names[int(np.argmin(np.linalg.norm(pal - c, axis=1)))]


def score_single(images, specs, judge=None) -> dict:
    """Agreement of single-object samples with their specs' shape and colour."""
    imgs = _to_uint8(images)
    want_shape = np.asarray([s.objects[0].shape for s in specs])
    want_col = np.asarray([s.objects[0].colour for s in specs])
    judge = judge if judge is not None else _judge()
    if judge is not None:
        pred = judge.predict(imgs)
        shape_ok = pred["shape"].to_numpy() == want_shape
        col_ok = pred["colour"].to_numpy() == want_col
        per_shape = {str(sh): float((shape_ok & col_ok)[want_shape == sh].mean()) for sh in sorted(set(want_shape))}
        return {"scorer": "judge", "n": len(specs), "shape": float(shape_ok.mean()), "colour": float(col_ok.mean()),
                "joint": float((shape_ok & col_ok).mean()), "per_shape": per_shape,
                "geometric": geometric_check(imgs, want_shape, col_ok)}
    col = np.asarray([heuristic_colour(im) for im in imgs])
    return {"scorer": "colour-heuristic", "n": len(specs), "colour": float((col == want_col).mean())}


def geometric_check(images, want_shape, colour_ok) -> dict:
    """The same samples read by the non-learned geometric scorer (backends.shapes.geometric_scorer), a
    second opinion on the judge's shapes (colour from the judge): shape, shape+colour and per shape."""
    from backends.shapes.geometric_scorer import classify_shapes

    geo = np.asarray(classify_shapes(images))
    ok = geo == np.asarray(want_shape)
    return {"shape": float(ok.mean()), "joint": float((ok & colour_ok).mean()),
            "per_shape": {str(sh): float((ok & colour_ok)[want_shape == sh].mean()) for sh in sorted(set(want_shape))}}


def detected_objects(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """For each region mask (K, H, W): the foreground components that overlap it most (bool (K, H, W))."""
    from backends.shapes.regions_eval import assign_components

    return assign_components(foreground(image), masks)


def score_regions(images, region_masks, region_specs, judge=None) -> dict:
    """Per-region agreement (judge on each painted region) and IoU of detected object vs region."""
    imgs = _to_uint8(images)
    judge = judge if judge is not None else _judge()
    ok, ok_shape, ok_col, ious = [], [], [], []
    for im, masks, objs in zip(imgs, region_masks, region_specs):
        masks = np.asarray(masks, bool)
        det = detected_objects(im, masks)
        inter = (det & masks).reshape(len(masks), -1).sum(1)
        union = (det | masks).reshape(len(masks), -1).sum(1)
        ious += list(inter / np.maximum(union, 1))
        if judge is not None:
            pred = judge.predict_objects(im, masks)
            for (_, row), o in zip(pred.iterrows(), objs):
                ok_shape.append(row["shape"] == o.shape)
                ok_col.append(row["colour"] == o.colour)
                ok.append(ok_shape[-1] and ok_col[-1])
    res = {"n_regions": len(ious), "iou_mean": float(np.mean(ious)), "iou_ge_0.5": float(np.mean(np.asarray(ious) >= 0.5))}
    if judge is not None:
        res.update(scorer="judge", joint=float(np.mean(ok)), shape=float(np.mean(ok_shape)), colour=float(np.mean(ok_col)))
    else:
        res["scorer"] = "iou-only (no judge)"
    return res


def eval_single(pipe, n: int, *, steps: int, guidance: float, seed: int = 0, paraphrase: bool = False,
                batch: int = 50, judge=None, eta: float | None = None, method: str | None = None) -> dict:
    import torch

    from backends.shapes import scenes

    b = scenes.make_batch(n, seed=seed, split="test", single=True, size=8)
    rng = np.random.default_rng(seed)
    prompts = [scenes.caption(s, rng) if paraphrase else scenes.canonical_caption(s) for s in b.specs]
    imgs = []
    g = torch.Generator().manual_seed(seed)
    for s in range(0, n, batch):
        out = pipe(prompts[s:s + batch], guidance_scale=guidance, num_inference_steps=steps, generator=g, eta=eta,
                   guidance_method=method)
        imgs.append(out.images)
    res = score_single(np.concatenate(imgs), b.specs, judge)
    res["prompts"] = "paraphrased" if paraphrase else "canonical"
    res["guidance_method"] = out.guidance_method
    return res


def eval_regions(pipe, n: int, *, steps: int, guidance: float, seed: int = 0, batch: int = 50, judge=None,
                 global_prompt: str = "canonical", eta: float | None = None) -> dict:
    """n random layouts of 2-3 objects: their masks + short object phrases as region prompts."""
    import torch

    from backends.shapes import scenes
    from backends.shapes.generator import object_phrase

    rng = np.random.default_rng(seed + 7)
    srng = scenes.split_rng("test", seed + 1000)
    specs = [scenes.sample_scene(srng, n_objects=int(srng.integers(2, 4))) for _ in range(n)]
    size = pipe.latent_size * pipe.codec.patch
    g = torch.Generator().manual_seed(seed)
    imgs, all_masks = [], []
    for s in range(0, n, batch):
        chunk = specs[s:s + batch]
        maps, prompts = [], []
        for sp in chunk:  # one spatio-textual map per layout, generated as one batch
            _, masks = scenes.render(sp, size)
            maps.append(pipe.prepare_region_map(1, masks, [object_phrase(o, rng) for o in sp.objects]))
            all_masks.append(masks)
            prompts.append(scenes.canonical_caption(sp) if global_prompt == "canonical" else "")
        out = pipe(prompts, guidance_scale=guidance, num_inference_steps=steps, generator=g,
                   region_map=torch.cat(maps), eta=eta)
        imgs.append(out.images)
    return score_regions(np.concatenate(imgs), all_masks, [sp.objects for sp in specs], judge)


def background_colour(image: np.ndarray, outside: np.ndarray) -> str:
    """The named background nearest to the median colour of the pixels outside every region and
    every detected object ("none" when fewer than 8 such pixels)."""
    from backends.shapes import scenes

    px = image[outside & ~foreground(image)] if outside.any() else image[outside]
    if len(px) < 8:
        return "none"
    c = np.median(px.astype(np.float32), axis=0)
    names = list(scenes.BACKGROUNDS)
    pal = np.asarray([scenes.BACKGROUNDS[k] for k in names], np.float32)
    return names[int(np.argmin(np.linalg.norm(pal - c, axis=1)))]


def user_layouts(n: int, size: int, seed: int = 0):
    """n user-like layouts: 2-3 painted areas (rectangles, ellipses, free strokes, 10-60% of the
    canvas each; painted.user_layout), each prompted with a random object drawn independently of
    the area's outline, and a background prompt. Returns [(masks (R, size, size) bool,
    [(shape, colour, phrase)], background, global prompt)]."""
    from backends.shapes import painted, scenes

    rng = np.random.default_rng(np.random.SeedSequence([0x5EA, seed]))
    out = []
    while len(out) < n:
        r = int(rng.integers(2, 4))
        masks = painted.user_layout(rng, r, size)
        if len(masks) < r:
            continue
        objs = []
        for _ in range(r):
            sh = scenes.SHAPES[int(rng.integers(len(scenes.SHAPES)))]
            col = list(scenes.COLOURS)[int(rng.integers(len(scenes.COLOURS)))]
            objs.append((sh, col, f"a {col} {sh}"))
        bg = list(scenes.BACKGROUNDS)[int(rng.integers(len(scenes.BACKGROUNDS)))]
        out.append((masks > 0.5, objs, bg, f"on a {bg} background"))
    return out


def score_user_regions(images, layouts, judge=None) -> dict:
    """Per region: judged shape / colour inside the painted area; the object inside its region
    (a foreground object found in the area, with >= 80% of its pixels inside it); background
    colour obeyed outside the regions."""
    from backends.shapes.regions_eval import inside_region, object_components

    imgs = _to_uint8(images)
    judge = judge if judge is not None else _judge()
    ok_shape, ok_col, inside, bg_ok = [], [], [], []
    per_shape: dict[str, list] = {}
    for im, (masks, objs, bg, _) in zip(imgs, layouts):
        det = object_components(im, masks)
        for k in range(len(masks)):
            inside.append(inside_region(det[k], masks[k]))
        bg_ok.append(background_colour(im, ~masks.any(0)) == bg)
        if judge is not None:
            pred = judge.predict_objects(im, masks)
            for (_, row), (sh, col, _) in zip(pred.iterrows(), objs):
                ok_shape.append(row["shape"] == sh)
                ok_col.append(row["colour"] == col)
                per_shape.setdefault(sh, []).append(ok_shape[-1] and ok_col[-1])
    res = {"n_layouts": len(layouts), "n_regions": len(inside), "inside": float(np.mean(inside)),
           "background": float(np.mean(bg_ok))}
    if judge is not None:
        joint = np.asarray(ok_shape) & np.asarray(ok_col)
        res.update(scorer="judge", joint=float(joint.mean()), shape=float(np.mean(ok_shape)),
                   colour=float(np.mean(ok_col)), per_shape={k: float(np.mean(v)) for k, v in sorted(per_shape.items())})
    return res


def eval_user_regions(pipe, n: int, *, steps: int, guidance: float, seed: int = 0, batch: int = 50, judge=None,
                      eta: float | None = None) -> dict:
    """The user-like region protocol (user_layouts) through SpaText: the image's score (score_user_regions)."""
    import torch

    size = pipe.latent_size * pipe.codec.patch
    layouts = user_layouts(n, size, seed)
    g = torch.Generator().manual_seed(seed)
    imgs = []
    for s in range(0, n, batch):
        chunk = layouts[s:s + batch]
        maps = torch.cat([pipe.prepare_region_map(1, m, [o[2] for o in objs]) for m, objs, _, _ in chunk])
        out = pipe([lay[3] for lay in chunk], guidance_scale=guidance, num_inference_steps=steps, generator=g,
                   region_map=maps, eta=eta)
        imgs.append(out.images)
    return score_user_regions(np.concatenate(imgs), layouts, judge)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backends.shapes.eval_generator")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--regions", type=int, default=200)
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale (default: the model's, and its region-map guidance for --regions)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the model's, 1.0 for Shapes)")
    p.add_argument("--guidance-method", choices=["cfg", "auto"], default=None,
                   help="text prompts: classifier-free guidance or autoguidance (default: the model's; region maps "
                        "always use classifier-free guidance)")
    p.add_argument("--weights", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--sweep-guidance", default=None,
                   help="comma-separated guidance scales: canonical single-object accuracy for each (on --sweep-n prompts)")
    p.add_argument("--sweep-n", type=int, default=100)
    p.add_argument("--curve", default=None, help="print the accuracy-vs-steps curve from a training log.jsonl and stop")
    args = p.parse_args(argv)
    if args.curve:
        from backends.shapes.train_generator import eval_curve

        for r in eval_curve(args.curve):
            print(json.dumps(r))
        return 0

    import torch

    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline(path=args.weights)
    guidance = pipe.default_guidance_scale if args.guidance is None else args.guidance
    judge = _judge()
    if args.eta is None:
        args.eta = pipe.default_eta
    if args.steps is None:
        args.steps = pipe.default_steps
    region_guidance = pipe.default_region_guidance_scale if args.guidance is None else args.guidance
    try:
        method = pipe.resolve_guidance_method(args.guidance_method)
    except ValueError as exc:
        p.error(str(exc))
    results = {"steps": args.steps, "guidance": guidance, "region_guidance": region_guidance, "eta": args.eta,
               "guidance_method": method}
    t0 = time.time()
    if args.sweep_guidance:
        results["guidance_sweep"] = {}
        for gs in [float(x) for x in args.sweep_guidance.split(",")]:
            r = eval_single(pipe, args.sweep_n, steps=args.steps, guidance=gs, seed=args.seed + 1, judge=judge, eta=args.eta,
                            method=method)
            results["guidance_sweep"][str(gs)] = r
            print(json.dumps({"guidance": gs, **r}), flush=True)
    if args.n:
        results["single_canonical"] = eval_single(pipe, args.n, steps=args.steps, guidance=guidance, seed=args.seed,
                                                  judge=judge, eta=args.eta, method=method)
        print(json.dumps(results["single_canonical"]), flush=True)
        results["single_paraphrased"] = eval_single(pipe, args.n, steps=args.steps, guidance=guidance, seed=args.seed,
                                                    paraphrase=True, judge=judge, eta=args.eta, method=method)
        print(json.dumps(results["single_paraphrased"]), flush=True)
    if args.regions:
        results["regions"] = eval_regions(pipe, args.regions, steps=args.steps, guidance=region_guidance, seed=args.seed,
                                          judge=judge, eta=args.eta)
        print(json.dumps(results["regions"]), flush=True)
    results["eval_s"] = round(time.time() - t0, 1)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
