"""The first neighbours click on a corpus whose index is not built yet (issue #21: ≤ 2 s at any size).

    .venv/bin/python bench/bench_first_click.py [--sizes 20000,200000,1000000] [--dim 384] [--wait-index 0]

For each size: N × D clustered float32 vectors are registered as a corpus (Backends.add_corpus, as an
upload is), then the first `neighbours` call is timed: the registry answers it with a scan of the raw
vectors while the index (HNSW below 1,000,000 rows, the inverted file from there) builds in the
background. The answer is checked against an exact search, and the next clicks are timed too. With
--wait-index S the benchmark also waits up to S seconds for the index and reports how long a user
would have waited for the first click without the scan (the ratio). One thread for BLAS, as the
server on a shared 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: one BLAS thread, as the server on 2 cores

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, d)).astype(np.float32)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        out[s:e] = centres[rng.integers(0, 64, e - s)] + 0.5 * rng.normal(size=(e - s, d)).astype(np.float32)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="20000,200000,1000000")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--wait-index", type=float, default=0.0, help="seconds to wait for the index build (0: do not)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import pandas as pd

    from backends.corpora.corpus import Corpus
    from backends.corpora.index import brute_force_knn
    from backends.registry import Backends
    from backends.settings import Settings

    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        x = clustered(n, args.dim)
        with tempfile.TemporaryDirectory(prefix="first-click-") as cache:
            b = Backends(Settings.from_env(cache_dir=cache))
            key = b.add_corpus(Corpus(f"bench-{n}", x, pd.DataFrame({"id": [f"r{i}" for i in range(n)]})))
            item = n // 3
            t0 = time.perf_counter()
            d, i = b.neighbours(key, item, k=10)
            first = time.perf_counter() - t0
            _, truth = brute_force_knn(x, x[item:item + 1], 11, "cosine")
            exact = [j for j in truth[0] if j != item][:10] == i.tolist()
            later = []
            for it in (n // 5, n // 2, n - 1):
                t = time.perf_counter()
                b.neighbours(key, it, k=10)
                later.append(time.perf_counter() - t)
            row = {"n": n, "dim": args.dim, "first_click_s": round(first, 3), "exact": bool(exact),
                   "next_clicks_s": [round(t, 3) for t in later]}
            if args.wait_index > 0:
                t = time.perf_counter()
                index = b.index(key, "cosine", wait=False)
                while index is None and time.perf_counter() - t < args.wait_index:
                    time.sleep(1.0)
                    index = b.index(key, "cosine", wait=False)
                built = time.perf_counter() - t0
                row["index"] = getattr(index, "kind", None) if index is not None else "not ready"
                row["index_ready_after_s"] = round(built, 1) if index is not None else f"> {args.wait_index:g}"
                if index is not None:
                    row["ratio"] = round(built / first, 1)
            print(json.dumps(row), flush=True)
            results.append(row)
            del b
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
