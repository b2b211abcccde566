"""kNN search, 100,000 × 64, 1,000 queries, k=10: this project's index vs numpy brute force.

Prints build and query times, the speed-up of queries, and recall@10 against the exact answer.
Target (issue 2): ≥ 10× faster at recall@10 ≥ 0.98.
"""
import argparse

import numpy as np
from common import Timer, embedding_like

from backends.corpora.index import VectorIndex, brute_force_knn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--metric", default="cosine")
    a = ap.parse_args()
    x = embedding_like(a.n)
    q = embedding_like(a.queries, seed=1)
    with Timer() as tb:
        index = VectorIndex(x, metric=a.metric)
    index.search(q[:10], 10)  # warm up
    with Timer() as tq:
        _, got = index.search(q, 10)
    with Timer() as tn:
        _, truth = brute_force_knn(x, q, 10, a.metric)
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
    print(f"data {a.n:,} x 64, {a.queries:,} queries, k=10, metric={a.metric}, index={index.kind}")
    print(f"index build            {tb.s:8.2f} s (once per corpus)")
    print(f"this project (FAISS)   {tq.s * 1000:8.1f} ms  ({tq.s / a.queries * 1000:.3f} ms/query)")
    print(f"numpy brute force      {tn.s * 1000:8.1f} ms  ({tn.s / a.queries * 1000:.3f} ms/query)")
    print(f"speed-up               {tn.s / tq.s:8.1f}x   recall@10 {recall:.4f}")


if __name__ == "__main__":
    main()
