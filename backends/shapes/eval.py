"""Quality numbers of the Shapes models on held-out (test split) seeds.

    python -m backends.shapes.eval <judge|encoders|generator|all> [--n N] [--seed S] [--json FILE]

judge     accuracy per factor: the scene net on single-object images at 32x32 and 64x64, and
          predict_objects (object net + mask centroid) on every object of 1-3 object scenes.
encoders  for each encoder: zero-shot shape and colour classification of single-object images;
          factor queries ("a blue star", 40 shape x colour queries) against a gallery of 1-3
          object scenes: precision@10 (share of the top 10 holding such an object), hit@10 and
          mean average precision over all scenes holding one (mAP: small or crowded objects count);
          caption -> image recall@10 (the paired image among the top 10 of the gallery).
generator delegated to backends.shapes.eval_generator.main(argv) when that module exists.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

import numpy as np

from backends.shapes import scenes

SHAPE_TEMPLATES = ("a {}", "a picture of a {}", "there is a {}")
COLOUR_TEMPLATES = ("a {} shape", "a {} object", "something {}")


def eval_judge(judge=None, *, n: int = 1000, seed: int = 0, split: str = "test") -> dict:
    from backends.shapes.judge import FACTORS, OBJECT_FACTORS, load_judge

    judge = judge or load_judge()
    out: dict = {}
    for size in (32, 64):
        b = scenes.make_batch(n, seed=seed + size, split=split, size=size, single=True)
        t = time.perf_counter()
        pred = judge.predict(b.images)
        out[f"scene{size}_ms_per_image"] = 1000 * (time.perf_counter() - t) / n
        for k in FACTORS:
            out[f"scene{size}_{k}"] = float((pred[k].values == b.factors[k].values).mean())
        out[f"scene{size}_shape+colour"] = float(((pred["shape"].values == b.factors["shape"].values)
                                                  & (pred["colour"].values == b.factors["colour"].values)).mean())
    for size in (32, 64):
        b = scenes.make_batch(n // 2, seed=seed + 7 + size, split=split, size=size)
        hits = {k: [] for k in OBJECT_FACTORS + ("position",)}
        for img, masks, spec in zip(b.images, b.masks, b.specs):
            keep = [i for i in range(len(spec.objects)) if masks[i].sum() > 0]
            pred = judge.predict_objects(img, masks[keep])
            for row, i in zip(pred.itertuples(), keep):
                o = spec.objects[i]
                for k in hits:
                    hits[k].append(getattr(row, k) == (o.position if k == "position" else getattr(o, k)))
        for k, v in hits.items():
            out[f"objects{size}_{k}"] = float(np.mean(v))
        out[f"objects{size}_count"] = len(hits["shape"])
    return out


def _zero_shot(enc, images, labels, names, templates) -> float:
    prompts = [t.format(nm) for nm in names for t in templates]
    z = enc.encode_texts(prompts).reshape(len(names), len(templates), -1).mean(1)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    v = enc.encode_images(images)
    pred = np.asarray(names)[(v @ z.T).argmax(1)]
    return float((pred == np.asarray(labels)).mean())


def eval_encoder(enc, *, n_gallery: int = 2000, n_single: int = 1000, seed: int = 0, split: str = "test") -> dict:
    """Zero-shot accuracy, factor-query precision/hit@10 and caption recall@10 (see module doc)."""
    out: dict = {}
    single = scenes.make_batch(n_single, seed=seed + 101, split=split, size=64, single=True)
    out["zeroshot_shape"] = _zero_shot(enc, single.images, single.factors["shape"], scenes.SHAPES, SHAPE_TEMPLATES)
    out["zeroshot_colour"] = _zero_shot(enc, single.images, single.factors["colour"], tuple(scenes.COLOURS), COLOUR_TEMPLATES)

    g = scenes.make_batch(n_gallery, seed=seed + 202, split=split, size=64)
    t = time.perf_counter()
    v = enc.encode_images(g.images)
    out["image_ms_per_image"] = 1000 * (time.perf_counter() - t) / len(g)
    contents = [{(o.shape, o.colour) for o in sp.objects} for sp in g.specs]
    queries = [(s, c) for s in scenes.SHAPES for c in scenes.COLOURS]
    q = enc.encode_texts([f"a {c} {s}" for s, c in queries])
    order = np.argsort(-(q @ v.T), axis=1)
    prec, hit, ap = [], [], []
    for (s, c), row in zip(queries, order):
        rel = np.array([(s, c) in contents[i] for i in row])
        prec.append(rel[:10].mean())
        hit.append(rel[:10].any())
        if rel.any():  # average precision over all scenes holding such an object
            ranks = np.flatnonzero(rel) + 1
            ap.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    out["query_precision@10"] = float(np.mean(prec))
    out["query_hit@10"] = float(np.mean(hit))
    out["query_mAP"] = float(np.mean(ap))
    # the same queries against single-object images only
    vs = enc.encode_images(single.images)
    lab = list(zip(single.factors["shape"], single.factors["colour"]))
    top = np.argsort(-(q @ vs.T), axis=1)[:, :10]
    out["query_precision@10_single"] = float(np.mean([[lab[i] == qc for i in row] for qc, row in zip(queries, top)]))
    # caption -> paired image
    tq = enc.encode_texts(g.captions)
    sim = tq @ v.T
    rank = (sim > sim[np.arange(len(sim)), np.arange(len(sim))][:, None]).sum(1)
    out["caption_recall@1"] = float((rank < 1).mean())
    out["caption_recall@10"] = float((rank < 10).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    what, rest = argv[0], argv[1:]
    if what not in ("judge", "encoders", "generator", "all"):
        print(f"Unknown model: {what!r}. Must be one of: judge, encoders, generator, all", file=sys.stderr)
        return 2
    if what in ("generator", "all"):
        try:
            gen = importlib.import_module("backends.shapes.eval_generator")
        except ModuleNotFoundError as exc:
            if exc.name != "backends.shapes.eval_generator":
                raise
            gen = None
            print("generator: no evaluation yet (backends/shapes/eval_generator.py is missing)", file=sys.stderr)
        if what == "generator":
            return gen.main(rest) if gen else 2
    p = argparse.ArgumentParser(prog=f"python -m backends.shapes.eval {what}")
    p.add_argument("--n", type=int, default=1000, help="held-out images per measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--threads", type=int, default=1)
    args, unknown = p.parse_known_args(rest)
    import torch

    torch.set_num_threads(args.threads)
    results: dict = {}
    if what in ("judge", "all"):
        results["judge"] = eval_judge(n=args.n, seed=args.seed)
        _print("judge (test split)", results["judge"])
    if what in ("encoders", "all"):
        from backends.shapes.encoders import available_encoders, load_image_encoder

        for name in available_encoders():
            results[name] = eval_encoder(load_image_encoder(name), n_gallery=2 * args.n, n_single=args.n, seed=args.seed)
            _print(f"{name} (test split)", results[name])
    if what == "all" and gen is not None:
        rc = gen.main([*unknown, "--seed", str(args.seed), "--threads", str(args.threads)])
        if rc:
            return rc
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _print(title: str, d: dict) -> None:
    print(title)
    for k, v in d.items():
        print(f"  {k:32s} {v:.4f}" if isinstance(v, float) else f"  {k:32s} {v}")


if __name__ == "__main__":
    sys.exit(main())
