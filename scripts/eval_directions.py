"""How well each family of Directions-tab directions isolates one Shapes factor, on the shipped generator.

    python scripts/eval_directions.py [--noiseclr-steps 150] [--threads 2] [--json OUT]

For PCA (the tab's "Discover: PCA", top 10), the Jacobian (the top 10 singular vectors of the source
"a red circle in the center" at step 2 of 10) and NoiseCLR (k = 10, learned on the tab's sample bank),
each direction is judged on the same 12 sources as the quality bar in tests/test_directions.py (edited
by ± its default strength; NoiseCLR also at 0.25 / 0.5 / 2): a direction has a dominant factor when
≥ 70% of the judged change is in one factor and ≥ 20% of the samples change. Then the Directions
tab's disentanglement table (MIG, DCI, InfoMEC against the factors the prompts asked for) for the
conditional and the unconditional half. Prints one JSON line per result; docs/directions.md has the
tables. About 5 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, when run as a script

DOMINANT_SHARE, MIN_CHANGED = 0.7, 0.2
NOISECLR_STRENGTHS = (0.25, 0.5, 2.0)


def family_report(pipe, judge, dirs, sources, strength=None) -> dict:
    """{'dominant': count, 'top_shares': [lo, hi], 'changed': [lo, hi], 'each': [...]} for the directions."""
    from backends.generative import directions as D

    each = []
    for d in dirs:
        rep = D.judge_direction(pipe, d, sources, judge, strength=strength, istd_samples=0)
        each.append({"id": d.id, "share": round(float(rep["disentanglement"]), 3), "dominant": rep["dominant"],
                     "changed": round(float(rep["any_change"]), 3), "name": rep["name"]})
    shares = [e["share"] for e in each]
    changed = [e["changed"] for e in each]
    return {"dominant": sum(e["share"] >= DOMINANT_SHARE and e["changed"] >= MIN_CHANGED for e in each),
            "of": len(each), "top_shares": [min(shares), max(shares)], "changed": [min(changed), max(changed)],
            "each": each}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--noiseclr-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import torch

    from app.services.directions import DirectionsService
    from backends.generative import directions as D
    from backends.generative import hspace
    from backends.registry import Backends
    from backends.settings import Settings

    torch.set_num_threads(args.threads)
    t0 = time.time()
    out: dict = {"model_steps": None, "families": {}, "disentanglement": {}}
    with tempfile.TemporaryDirectory(prefix="eval-directions-") as cache:
        svc = DirectionsService(Backends(Settings.from_env(cache_dir=cache)))
        pipe, judge = svc.pipe, svc.judge
        if judge is None:
            p.error("no judge: assets/shapes/judge.safetensors is missing")
        out["model_steps"] = getattr(getattr(pipe, "config", None), "trained_steps", None)
        prompts, _ = D.shapes_prompts(12, seed=7)
        sources = hspace.generate(pipe, prompts, seeds=1000, steps=10)

        def report(name, ids, strength=None):
            r = family_report(pipe, judge, [svc.get(i) for i in ids], sources, strength)
            out["families"][name] = r
            print(json.dumps({"family": name, **{k: v for k, v in r.items() if k != "each"}}), flush=True)

        pca = svc.discover_pca(k=10)
        report("pca", pca)
        src, _ = svc.source_from_prompt("a red circle in the center", seed=0, steps=10)
        traj = svc.source(src)
        dirs, _ = D.jacobian_directions(pipe, traj, 2, k=10, iters=30, tol=1e-4)
        report("jacobian", [svc.add(d) for d in dirs])
        nc = svc.noiseclr(k=10, steps=args.noiseclr_steps)
        report("noiseclr", nc)
        for s in NOISECLR_STRENGTHS:
            report(f"noiseclr at {s:g}", nc, s)
        for half in ("cond", "uncond"):
            table = svc.disentanglement(half=half)
            rows = table.to_dict(orient="records")
            out["disentanglement"][half] = {"rows": rows, "note": table.attrs.get("note", "")}
            for r in rows:
                print(json.dumps({"half": half, **r}), flush=True)
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({"seconds": out["seconds"]}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
