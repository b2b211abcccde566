"""Opening an ingest's OUT folder (shards, map, index) against its Embedding Projector pair (issue #21 item 3).

    python bench/bench_ingest_open.py [--n 10000] [--dim 384] [--umap]

Writes an OUT folder of N rows × D dims with 64×64 PNG thumbnails and a metadata column through the
ingest's own ShardWriter (with the Projector pair, as the ingest wrote it before), an exact index.faiss and
a map.parquet, without Ray. Then, in this process, times:
  shards   load_path(OUT): vectors, metadata, thumbnails decoded, map and index path (what --data OUT/ does now)
  index    reading index.faiss (what the first neighbours click does now)
  tsv      load_paths([vectors.tsv, metadata.tsv]) (what --data OUT/ did: no thumbnails)
  build    the index the app built for the TSV corpus (exact below 20,000 rows, HNSW above)
  umap     (--umap) the UMAP map the app computed for the TSV corpus; map.parquet replaces it now
and prints the folder's and the pair's sizes (the pair counted against LATENT_ATLAS_MAX_UPLOAD_MB).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_out(out: Path, n: int, d: int) -> None:
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backends.corpora.projection import ProjectionParams
    from backends.ingest.index import _add
    from backends.ingest.pipeline import FORMAT, MANIFEST
    from backends.ingest.write import ShardWriter, png_bytes, vector_array

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    with ShardWriter(out, source="bench", id_column="id", meta_columns=["label"], projector=True) as w:
        for s in range(0, n, 10_000):
            e = min(n, s + 10_000)
            thumbs = []
            for i in range(s, e):  # a flat background and a coloured square, as the Shapes thumbnails are
                im = np.full((64, 64, 3), 255, np.uint8)
                x0, y0 = (i * 7) % 40, (i * 13) % 40
                im[(yy >= y0) & (yy < y0 + 20) & (xx >= x0) & (xx < x0 + 20)] = ((i * 37) % 256, 90, 200)
                thumbs.append(png_bytes(im))
            w.add(pa.table({"id": [f"item-{i}" for i in range(s, e)], "vector": vector_array(vectors[s:e]),
                            "label": [f"c{i % 10}" for i in range(s, e)], "thumbnail": pa.array(thumbs, pa.binary())}))
        written = w.finish()
    empty = faiss.serialize_index(faiss.IndexIDMap(faiss.IndexFlatIP(d)))
    faiss.write_index(faiss.deserialize_index(_add(empty, vectors, 0)), str(out / "index.faiss"))
    xy = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    pq.write_table(pa.table({"id": written.ids, "x": xy[:, 0], "y": xy[:, 1]}), out / "map.parquet")
    (out / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "source": "bench", "rows": n, "dim": d, "metadata_columns": ["label"],
        "shards": written.shards, "index": {"file": "index.faiss", "kind": "flat"},
        "map": {"file": "map.parquet", "method": "umap", "metric": "cosine", "params": ProjectionParams().__dict__}}))


def mb(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--umap", action="store_true", help="also time the UMAP map the TSV path computed")
    args = ap.parse_args()
    from backends.corpora.index import VectorIndex
    from backends.corpora.loaders import load_path, load_paths

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        write_out(out, args.n, args.dim)
        print(f"wrote {args.n:,} × {args.dim} in {time.perf_counter() - t0:.1f} s; shards {mb(out.glob('shards/*')):.1f} MB, "
              f"index {mb([out / 'index.faiss']):.1f} MB, Projector pair "
              f"{mb([out / 'vectors.tsv', out / 'metadata.tsv']):.1f} MB")
        big = 1 << 40
        t0 = time.perf_counter()
        c = load_path(out, max_bytes=big)
        t_shards = time.perf_counter() - t0
        t0 = time.perf_counter()
        VectorIndex.read(c.precomputed.index_path, rows=len(c), dim=c.dim)
        t_index = time.perf_counter() - t0
        print(f"shards: {t_shards:.2f} s (thumbnails {c.images.shape}); index.faiss read: {t_index:.2f} s")
        t0 = time.perf_counter()
        p = load_paths([out / "vectors.tsv", out / "metadata.tsv"], max_bytes=big)
        t_tsv = time.perf_counter() - t0
        t0 = time.perf_counter()
        VectorIndex(p.vectors)
        t_build = time.perf_counter() - t0
        print(f"tsv: {t_tsv:.2f} s (no thumbnails); index built: {t_build:.2f} s")
        assert np.array_equal(c.vectors, p.vectors)
        if args.umap:
            from backends.corpora.projection import ProjectionParams, project

            t0 = time.perf_counter()
            project(p.vectors, ProjectionParams())
            print(f"umap: {time.perf_counter() - t0:.1f} s (map.parquet replaces it)")


if __name__ == "__main__":
    main()
