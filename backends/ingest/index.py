"""A FAISS index of OUT's vectors: trained on a sample, each shard added in its own Ray task, merged.

    info = build_index(written.vector_refs, [s["rows"] for s in written.shards], dim, OUT / "index.faiss")

Cosine similarity: vectors are L2-normalised and searched by inner product, so a search's scores
are cosines. Ids are row numbers: id i is row i of the shards (and of map.parquet).

    flat   exact (IndexIDMap over IndexFlatIP), for up to IVF_ABOVE rows
    ivf    IndexIVFFlat with nlist ≈ 4·√N lists, its coarse quantizer trained (k-means) on a sample of at
           most 256 vectors per list drawn from every shard; nprobe is stored with it

The empty (trained) index goes to every task as FAISS's own serialisation (bytes); each task adds
its shard with global ids and sends its part back the same way; the driver merges the parts in
shard order (merge_from) and writes the result with faiss.write_index. Nothing is pickled to disk.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from backends.errors import InputError

KINDS = ("auto", "flat", "ivf")
IVF_ABOVE = 50_000  # "auto": exact search below this many rows
SAMPLE_PER_LIST = 256
DEFAULT_NPROBE = 16


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def default_nlist(n: int) -> int:
    return int(max(1, min(n // 39, round(4 * math.sqrt(n)))))


def _sample(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(vectors), size=min(k, len(vectors)), replace=False))
    return _normalize(vectors[take])


def _add(empty: np.ndarray, vectors: np.ndarray, offset: int) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(1)  # one core per task; the tasks run side by side
    index = faiss.deserialize_index(empty)
    index.add_with_ids(_normalize(vectors), np.arange(offset, offset + len(vectors), dtype=np.int64))
    return faiss.serialize_index(index)


def build_index(vector_refs: list, rows: list[int], dim: int, path: Path, *, kind: str = "auto",
                nlist: int | None = None, seed: int = 0) -> dict:
    """Train, add the shards (Ray object refs of their vectors, `rows` each) in parallel Ray tasks, merge, write.
    Returns what was built (for manifest.json)."""
    import faiss
    import ray

    if kind not in KINDS:
        raise InputError(f"--index must be one of {', '.join(KINDS)}, but is {kind!r}")
    sample_task, add_task = ray.remote(num_cpus=1)(_sample), ray.remote(num_cpus=1)(_add)
    rows = [int(r) for r in rows]
    offsets = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(int).tolist()
    n = sum(rows)
    if kind == "auto":
        kind = "flat" if n < IVF_ABOVE else "ivf"
    info: dict = {"file": Path(path).name, "kind": kind, "metric": "cosine (inner product of L2-normalised vectors)",
                  "rows": n, "dim": int(dim)}
    if kind == "flat":
        index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
    else:
        nlist = int(nlist or default_nlist(n))
        if not 1 <= nlist <= n:
            raise InputError(f"nlist must be between 1 and the number of rows ({n}), but is {nlist}")
        want = min(n, SAMPLE_PER_LIST * nlist)
        per = [max(1, math.ceil(want * r / n)) for r in rows]
        sample = np.concatenate(ray.get([sample_task.remote(ref, k, seed + i)
                                         for i, (ref, k) in enumerate(zip(vector_refs, per))]))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(sample)
        index.nprobe = min(nlist, DEFAULT_NPROBE)
        info.update(nlist=nlist, nprobe=int(index.nprobe), trained_on=int(len(sample)))
    empty = ray.put(faiss.serialize_index(index))
    parts = [add_task.remote(empty, ref, off) for ref, off in zip(vector_refs, offsets)]
    merged = None
    for ref in parts:  # in shard order
        part = faiss.deserialize_index(ray.get(ref))
        if merged is None:
            merged = part
        else:
            merged.merge_from(part, 0)
    if kind == "ivf":
        merged.nprobe = min(info["nlist"], DEFAULT_NPROBE)
    if merged.ntotal != n:
        raise AssertionError(f"index holds {merged.ntotal} vectors, expected {n}")
    faiss.write_index(merged, str(path))
    info["parts"] = len(parts)
    return info


def search(path: Path, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the k nearest rows for each query (cosine), from a written index."""
    import faiss

    index = faiss.read_index(str(path))
    return index.search(_normalize(queries), k)


__all__ = ["IVF_ABOVE", "KINDS", "build_index", "default_nlist", "search"]
