"""UMAP on a sample + placement vs a full fit, same data, same run (issue #21): the full fit of this
project (FAISS kNN graph + UMAP on every row) and, with --umap-learn, plain `umap.UMAP().fit_transform`
on every row, what a user would run instead.

    python bench/bench_projection_sampled.py [--n 200000] [--dim 384] [--sample 100000] [--full/--no-full]
                                             [--umap-learn]

Data: bench/common.py's embedding-like clusters (a low-dimensional latent mapped to --dim). Prints seconds for each path, the speed-up, and trustworthiness (k=10) of both maps on
the same 5,000 random rows.
"""
import argparse
import time

import numpy as np
from common import embedding_like  # bench/common.py also puts the repo on sys.path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sample", type=int, default=100_000)
    ap.add_argument("--full", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--umap-learn", action="store_true", help="also time plain umap-learn on every row")
    args = ap.parse_args()
    from sklearn.manifold import trustworthiness

    from backends.corpora.projection import ProjectionParams, project

    x = embedding_like(args.n, args.dim)
    sub = np.random.default_rng(0).choice(args.n, 5000, replace=False)
    print(f"data {args.n:,} x {args.dim} (embedding-like); fit sample {args.sample:,}")
    project(x[:3000], ProjectionParams(sample=0))  # numba compiles UMAP's code once: not part of either timing
    t0 = time.perf_counter()
    s = project(x, ProjectionParams(sample=args.sample), progress=lambda f, m: None)
    ts = time.perf_counter() - t0
    tw_s = trustworthiness(x[sub], s[sub], n_neighbors=10)
    print(f"sample + placement   {ts:8.1f} s   trustworthiness {tw_s:.4f}")
    if args.full:
        t0 = time.perf_counter()
        f = project(x, ProjectionParams(sample=0))
        tf = time.perf_counter() - t0
        tw_f = trustworthiness(x[sub], f[sub], n_neighbors=10)
        print(f"full fit             {tf:8.1f} s   trustworthiness {tw_f:.4f}")
        print(f"speed-up             {tf / ts:8.1f}x   trustworthiness difference {tw_f - tw_s:+.4f}")
    if args.umap_learn:
        import umap

        t0 = time.perf_counter()
        u = umap.UMAP(n_neighbors=15, min_dist=0.1, metric="cosine", random_state=None).fit_transform(x)
        tu = time.perf_counter() - t0
        tw_u = trustworthiness(x[sub], u[sub], n_neighbors=10)
        print(f"umap-learn, all rows {tu:8.1f} s   trustworthiness {tw_u:.4f}")
        print(f"speed-up vs it       {tu / ts:8.1f}x   trustworthiness difference {tw_u - tw_s:+.4f}")


if __name__ == "__main__":
    main()
