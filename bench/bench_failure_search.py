"""Failure rate found by random sampling vs by the failure search, for the same budget, per prompt family
on the active (shipped) Shapes generator and its judge (backends/generative/failure_search.py).

    .venv/bin/python bench/bench_failure_search.py [--budget 60] [--seeds 0,1,2] [--threads 1] [--json OUT]

For each family and seed: a random, a latent and a prompt search of `budget` images each (the model's
default sampling: autoguidance 3.5, 20 DDIM steps, eta 1). Prints the failure rate of each, the search
/ random ratio, and how many distinct asked prompts the failures cover.
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
    for name, fam in families.items():
        rates = {}
        for kind in ("random", "latent", "prompt"):
            t0 = time.perf_counter()
            runs = [search_failures(gen, surrogate, fam, budget=args.budget, kind=kind, seed=s) for s in seeds]
            rates[kind] = {"rate": float(np.mean([r.failure_rate for r in runs])),
                           "per_seed": [round(r.failure_rate, 3) for r in runs],
                           "distinct_prompts": float(np.mean([len({f.prompt for f in r.failures}) for r in runs])),
                           "distinct_asked": float(np.mean([len({tuple(f.asked.values()) for f in r.failures})
                                                            for r in runs])),
                           "seconds": round((time.perf_counter() - t0) / len(seeds), 1)}
        for kind in ("latent", "prompt"):
            rates[kind]["vs_random"] = round(rates[kind]["rate"] / max(rates["random"]["rate"], 1e-9), 2)
        out[name] = rates
        print(json.dumps({"family": name, "budget": args.budget, "seeds": seeds, **rates}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
