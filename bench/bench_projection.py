"""Projection of 100,000 × 64 vectors, each run in a fresh process: this project's UMAP (FAISS
IVF kNN graph → precomputed_knn, PCA init) vs plain `umap.UMAP().fit_transform`.

Each method runs twice: first with an empty numba cache (cold: a first-ever run, dominated by
numba compiling umap's code), then again with the cache the first run wrote (warm: every later
run; both numba caches persist by default — umap's next to its code, this project's in its
cache dir). Prints wall times, speed-ups, and trustworthiness (k=10) of the maps on the same
5,000-point subsample. Target (issue 2): ≥ 1.7× faster at trustworthiness within 0.01.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys, time, warnings
import numpy as np
sys.path.insert(0, {root!r})
warnings.simplefilter("ignore")
x = np.load({data!r})
t0 = time.perf_counter()
if {which!r} == "plain":
    import umap
    xy = umap.UMAP().fit_transform(x)
else:
    from backends.corpora.projection import ProjectionParams, project
    xy = project(x, ProjectionParams(method="umap", metric="euclidean"))
dt = time.perf_counter() - t0
np.save({out!r}, np.asarray(xy, dtype=np.float32))
print(json.dumps({{"seconds": dt}}))
"""


def run(which: str, data: str, tmp: str, numba_dir: str) -> tuple[float, np.ndarray]:
    out = os.path.join(tmp, f"{which}.npy")
    env = dict(os.environ, NUMBA_CACHE_DIR=numba_dir)
    code = CHILD.format(root=str(HERE.parent), data=data, which=which, out=out)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["seconds"], np.load(out)


def main():
    sys.path.insert(0, str(HERE))
    from common import embedding_like
    from sklearn.manifold import trustworthiness

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        x = embedding_like(a.n)
        data = os.path.join(tmp, "x.npy")
        np.save(data, x)
        sub = np.random.default_rng(0).choice(a.n, size=min(5_000, a.n), replace=False)
        dirs = {w: tempfile.mkdtemp(dir=tmp) for w in ("ours", "plain")}
        t, tw = {}, {}
        for phase in ("cold", "warm"):  # interleaved, so load drifts on the machine hit both alike
            for which in ("ours", "plain"):
                t[which, phase], xy = run(which, data, tmp, dirs[which])
                tw[which, phase] = trustworthiness(x[sub], xy[sub], n_neighbors=10)
    print(f"data {a.n:,} x 64, each run in a fresh process")
    for phase in ("cold", "warm"):
        print(f"[{phase} numba cache]")
        print(f"  this project (FAISS kNN + UMAP)  {t['ours', phase]:7.1f} s   trustworthiness@10 {tw['ours', phase]:.4f}")
        print(f"  plain umap.UMAP().fit_transform  {t['plain', phase]:7.1f} s   trustworthiness@10 {tw['plain', phase]:.4f}")
        print(f"  speed-up {t['plain', phase] / t['ours', phase]:.2f}x   trustworthiness difference "
              f"{tw['ours', phase] - tw['plain', phase]:+.4f}")


if __name__ == "__main__":
    main()
