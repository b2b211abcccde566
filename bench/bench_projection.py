"""Projection of 100,000 × 64 vectors, each method in a fresh process (cold numba cache in both):
this project's UMAP (FAISS HNSW kNN graph → precomputed_knn) vs plain `umap.UMAP().fit_transform`.

Prints wall times, the speed-up, and trustworthiness (k=10) of both maps on the same
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
    from backends.projection import ProjectionParams, project
    xy = project(x, ProjectionParams(method="umap", metric="euclidean"))
dt = time.perf_counter() - t0
np.save({out!r}, np.asarray(xy, dtype=np.float32))
print(json.dumps({{"seconds": dt}}))
"""


def run(which: str, data: str, tmp: str) -> tuple[float, np.ndarray]:
    out = os.path.join(tmp, f"{which}.npy")
    env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(dir=tmp))  # cold numba cache for each
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
        t_ours, xy_ours = run("ours", data, tmp)
        t_plain, xy_plain = run("plain", data, tmp)
        sub = np.random.default_rng(0).choice(a.n, size=min(5_000, a.n), replace=False)
        tw_ours = trustworthiness(x[sub], xy_ours[sub], n_neighbors=10)
        tw_plain = trustworthiness(x[sub], xy_plain[sub], n_neighbors=10)
    print(f"data {a.n:,} x 64, fresh process each, cold numba cache")
    print(f"this project (FAISS kNN + UMAP)  {t_ours:7.1f} s   trustworthiness@10 {tw_ours:.4f}")
    print(f"plain umap.UMAP().fit_transform  {t_plain:7.1f} s   trustworthiness@10 {tw_plain:.4f}")
    print(f"speed-up {t_plain / t_ours:.2f}x   trustworthiness difference {tw_ours - tw_plain:+.4f}")


if __name__ == "__main__":
    main()
