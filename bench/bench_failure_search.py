"""Failure rate found by random sampling vs by the failure search, for the same budget, per prompt family
on the active (shipped) Shapes generator and its judge (backends/generative/failure_search.py).

    .venv/bin/python bench/bench_failure_search.py [--budget 60] [--seeds 0,1,2] [--threads 1] [--json OUT]

For each family and seed: a random, a latent, a prompt, a token-gradient and a latent-gradient search
of `budget` images each (the model's default sampling: autoguidance 3.5, 20 DDIM steps, eta 1; the
gradient searches backpropagate through all 20 steps, with their default settings). Prints the failure
rate of each, the search / random ratio, how many distinct asked prompts the failures cover, and the
gradient steps spent. --kinds picks some.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=int, default=60)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--kinds", default="random,latent,prompt,token-gradient,latent-gradient")
    p.add_argument("--families", default="", help="comma-separated family names (default: all)")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from backends.generative.failure_search import search_failures
    from backends.generative.surrogates import PipelineGenerator, surrogate_for
    from backends.registry import Backends

    torch.set_num_threads(args.threads)
    b = Backends()
    families, load = surrogate_for(b)
    surrogate, gen = load(), PipelineGenerator(b.generator_pipeline())
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {}
    kinds = args.kinds.split(",")
    pick = [f for f in args.families.split(",") if f]
    for name, fam in families.items():
        if pick and name not in pick:
            continue
        rates = {}
        for kind in kinds:
            t0 = time.perf_counter()
            runs = [search_failures(gen, surrogate, fam, budget=args.budget, kind=kind, seed=s) for s in seeds]
            rates[kind] = {"rate": float(np.mean([r.failure_rate for r in runs])),
                           "per_seed": [round(r.failure_rate, 3) for r in runs],
                           "distinct_prompts": float(np.mean([len({f.prompt for f in r.failures}) for r in runs])),
                           "distinct_asked": float(np.mean([len({tuple(f.asked.values()) for f in r.failures})
                                                            for r in runs])),
                           "gradient_steps": float(np.mean([r.gradient_steps for r in runs])),
                           "seconds": round((time.perf_counter() - t0) / len(seeds), 1)}
        for kind in [k for k in kinds if k != "random" and "random" in rates]:
            rates[kind]["vs_random"] = round(rates[kind]["rate"] / max(rates["random"]["rate"], 1e-9), 2)
        out[name] = rates
        print(json.dumps({"family": name, "budget": args.budget, "seeds": seeds, **rates}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
