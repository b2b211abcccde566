"""kNN search, 100,000 × 64, 1,000 queries, k=10: this project's index vs numpy brute force.

    python bench/bench_knn.py [--n 100000] [--dim 64] [--queries 1000] [--metric cosine]
                              [--kind auto|flat|hnsw|ivf|hnsw,ivf]

Prints, for each index kind asked for, build and query times, the speed-up of queries over numpy
brute force, recall@10 against the exact answer, and what the index holds in memory (its estimate,
backends/corpora/index.py:index_bytes) against the float32 vectors. "auto" is the kind the app
picks for --n rows (flat below 20,000, HNSW, IVF from 1,000,000); "ivf" is the compressed inverted
file (IVF-PQ from 64 dimensions, else an 8-bit scalar quantizer; nprobe tuned at build).
Target (issue 2): ≥ 10× faster at recall@10 ≥ 0.98 (HNSW); issue #21: IVF recall@10 ≥ 0.95.
"""
import argparse

import numpy as np
from common import Timer, embedding_like

from backends.corpora.index import VectorIndex, brute_force_knn, index_bytes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--metric", default="cosine")
    ap.add_argument("--kind", default="auto", help="auto, flat, hnsw, ivf, or several: hnsw,ivf")
    a = ap.parse_args()
    x = embedding_like(a.n, a.dim)
    q = embedding_like(a.queries, a.dim, seed=1)
    with Timer() as tn:
        _, truth = brute_force_knn(x, q, 10, a.metric)
    vec_mb = x.nbytes / 2**20
    print(f"data {a.n:,} x {a.dim}, {a.queries:,} queries, k=10, metric={a.metric}; vectors {vec_mb:.0f} MB")
    print(f"numpy brute force      {tn.s * 1000:8.1f} ms  ({tn.s / a.queries * 1000:.3f} ms/query)")
    for kind in [k.strip() for k in a.kind.split(",") if k.strip()]:
        with Timer() as tb:
            index = VectorIndex(x, metric=a.metric, kind=kind)
        index.search(q[:10], 10)  # warm up
        with Timer() as tq:
            _, got = index.search(q, 10)
        recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
        mem = index_bytes(a.n, a.dim, index.kind) / 2**20
        extra = (f", {index.codec}, nprobe {index.nprobe}" + (f" (build estimate {index.recall_estimate:.4f})"
                                                              if index.recall_estimate is not None else "")
                 if index.kind == "ivf" else "")
        print(f"-- index={index.kind}{extra}")
        print(f"index build            {tb.s:8.2f} s (once per corpus); holds ~{mem:.0f} MB "
              f"({mem / vec_mb:.2f}x the vectors)")
        print(f"this project (FAISS)   {tq.s * 1000:8.1f} ms  ({tq.s / a.queries * 1000:.3f} ms/query)")
        print(f"speed-up               {tn.s / tq.s:8.1f}x   recall@10 {recall:.4f}")


if __name__ == "__main__":
    main()
