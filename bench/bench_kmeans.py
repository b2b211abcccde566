"""FAISS k-means (backends.clusters.clustering.kmeans) vs scikit-learn KMeans(n_init=10) on 100,000 × 64.

    python bench/bench_kmeans.py [--n 100000] [--dim 64] [--k 20] [--threads 2] [--n-init 3]

Both get the same number of threads. Inertia (sum of squared distances to the nearest centre) is
recomputed for both in float64 from their centres, so the comparison is like for like.
Target: FAISS ≥ 5× faster at inertia within 3% of scikit-learn's.
"""
from __future__ import annotations

import argparse

import numpy as np
from common import Timer, embedding_like


def inertia(x: np.ndarray, centres: np.ndarray) -> float:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(centres, dtype=np.float32))
    _, idx = index.search(x, 1)
    diff = x.astype(np.float64) - centres[idx[:, 0]].astype(np.float64)
    return float((diff * diff).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-init", type=int, default=3, help="restarts for FAISS (k-means++ seeds); sklearn gets 10")
    args = ap.parse_args()

    import faiss
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from backends.clusters.clustering import kmeans

    faiss.omp_set_num_threads(args.threads)
    x = embedding_like(args.n, args.dim, seed=0)
    print(f"data: {args.n:,} × {args.dim} embedding-like vectors, k={args.k}, {args.threads} thread(s)")

    kmeans(x[:2000], 2, n_init=1)  # warm-up (imports, OpenMP pool)
    with Timer() as tf:
        _, cf, _ = kmeans(x, args.k, n_init=args.n_init, seed=0)
    faiss_inertia = inertia(x, cf)
    print(f"FAISS k-means (n_init={args.n_init}, 25 iterations): {tf.s:.2f} s, inertia {faiss_inertia:.6g}")

    with threadpool_limits(args.threads), Timer() as ts:
        km = KMeans(n_clusters=args.k, n_init=10, random_state=0).fit(x)
    sk_inertia = inertia(x, km.cluster_centers_)
    print(f"scikit-learn KMeans(n_init=10): {ts.s:.2f} s, inertia {sk_inertia:.6g}")

    speedup = ts.s / tf.s
    gap = faiss_inertia / sk_inertia - 1
    print(f"speed-up {speedup:.1f}× · FAISS inertia {gap:+.2%} relative to scikit-learn "
          f"(target: ≥ 5× at within 3%) → {'PASS' if speedup >= 5 and gap <= 0.03 else 'FAIL'}")


if __name__ == "__main__":
    main()
