"""What the Directions tab's supervised directions do on the shipped Shapes generator, as a user runs them.

    python -m backends.shapes.supervised_eval [--sources 24] [--weights W] [--record] [--json OUT]

For one target per factor (colour → blue, shape → circle, size → large, position → center) the tab's
"Supervised" direction is built with the tab's defaults (prompt labels, its sample bank, the guidance
halves the model's config names), every source is edited by + its default strength, and the judge
reads the result: `reached` is the share of the sources not already at the target that end there,
`others_kept` the share of all sources whose other three factors stay as they were. The sources are
those of the quality bar in tests/test_directions.py (test prompts, seeds from 1000).

--record writes the scores into assets/shapes/generator.json (metrics.supervised_directions), where the
Directions tab reads them to tell a user, beside the Supervised section, what a factor's direction does
on this model (app/services/directions.py, ``supervised_note``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

TARGETS = (("colour", "blue"), ("shape", "circle"), ("size", "large"), ("position", "center"))
FACTORS = ("shape", "colour", "size", "position")


def score(base, after, factor: str, value: str) -> dict:
    """reached / others_kept from the judge's tables before and after (+ n, the sources not at the target)."""
    b = base[factor].astype(str).to_numpy()
    a = after[factor].astype(str).to_numpy()
    todo = b != value
    others = [f for f in FACTORS if f != factor and f in base.columns and f in after.columns]
    kept = np.all(base[others].astype(str).to_numpy() == after[others].astype(str).to_numpy(), axis=1)
    return {"reached": float(np.mean(a[todo] == value)) if todo.any() else float("nan"),
            "others_kept": float(np.mean(kept)), "n": int(todo.sum())}


def measure(pipe, judge, *, record_half: str, delta_half: str, n_bank: int | None = None, n_sources: int = 24,
            targets=TARGETS, cache=None) -> dict:
    """{name: {reached, others_kept, strength, n}} for each target: the direction the tab's Supervised section
    builds (its bank, prompt labels, h from `record_half`), applied to the sources with Δh in `delta_half`."""
    from backends.generative import directions as D
    from backends.generative import hspace
    from backends.generative.hspace_corpus import DEFAULT_SAMPLES, shapes_bank

    bank = shapes_bank(pipe, n_bank or DEFAULT_SAMPLES, cache=cache, judge=judge, record_half=record_half)
    prompts, _ = D.shapes_prompts(n_sources, seed=7)
    sources = hspace.generate(pipe, prompts, seeds=1000, steps=10)
    base = judge.predict(sources.images)
    out = {}
    for factor, value in targets:
        d = D.factor_direction(bank, factor, value, labels="truth")
        imgs = D.render(pipe, sources, [d], np.full((sources.batch, 1), d.default_strength), delta_half=delta_half)
        name = f"{factor} → {value}"
        out[name] = {**score(base, judge.predict(imgs), factor, value), "strength": round(float(d.default_strength), 2)}
        print(json.dumps({"direction": name, **out[name]}, ensure_ascii=False), flush=True)
    return out


def record(results: dict, *, n_sources: int, config_path=None) -> None:
    """Write the scores into the generator's JSON config (metrics.supervised_directions)."""
    from backends.shapes.generator import record_metric

    record_metric("supervised_directions", {
        "n_sources": n_sources, "labels": "truth",
        "directions": {k: {"reached": round(float(v["reached"]), 3), "others_kept": round(float(v["others_kept"]), 3),
                           "strength": float(v["strength"])} for k, v in results.items()}}, config_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m backends.shapes.supervised_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--sources", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default=None, help="a generator.safetensors to measure (default: the shipped one)")
    p.add_argument("--record", action="store_true", help="write the scores into assets/shapes/generator.json")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.record and args.weights:
        p.error("--record writes the shipped generator's config: measure it without --weights")

    import torch

    from backends.shapes.generator import shipped_config
    from backends.shapes.judge import WEIGHTS as JUDGE
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    if not JUDGE.exists():
        p.error("no judge: assets/shapes/judge.safetensors is missing")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = shipped_config()  # the halves the Directions tab starts with for Shapes
    pipe = load_shapes_pipeline(path=args.weights)
    results = measure(pipe, load_judge(), record_half=cfg.directions_record_half, delta_half=cfg.directions_delta_half,
                      n_sources=args.sources)
    print(json.dumps({"seconds": round(time.time() - t0, 1)}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.record:
        record(results, n_sources=args.sources)
    return 0


if __name__ == "__main__":
    sys.exit(main())
