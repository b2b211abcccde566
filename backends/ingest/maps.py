"""The 2-D map of OUT's vectors: backends.corpora.projection.project, written as OUT/map.parquet (id, x, y).

UMAP on a FAISS kNN graph (above 100,000 rows fitted on a sample, the rest placed), or PCA; the
coordinates are scaled to about [-1, 1], as the app's maps are. Corpora of fewer than MIN_UMAP_ROWS
rows get PCA (UMAP needs neighbours to lay out).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

METHODS = ("umap", "pca")
MIN_UMAP_ROWS = 16
FILE = "map.parquet"


def write_map(out: Path, ids: list[str], vectors: np.ndarray, *, method: str = "umap", device: str = "cpu") -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backends.corpora.projection import ProjectionParams, project

    if method not in METHODS:
        from backends.errors import InputError

        raise InputError(f"--map-method must be one of {', '.join(METHODS)}, but is {method!r}")
    used = method if len(vectors) >= MIN_UMAP_ROWS else "pca"
    params = ProjectionParams(method=used)
    xy = project(vectors, params, device=device)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "x": pa.array(xy[:, 0], pa.float32()),
                             "y": pa.array(xy[:, 1], pa.float32())}), Path(out) / FILE)
    # the params in full: the app puts the map in its cache under them (backends/corpora/ingested.py)
    return {"file": FILE, "method": used, "metric": "cosine", "rows": int(len(xy)), "params": dict(params.__dict__)}


def read_map(out: Path) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    t = pq.read_table(Path(out) / FILE)
    return t.column("id").to_pylist(), np.stack([t.column("x").to_numpy(), t.column("y").to_numpy()], axis=1)


__all__ = ["FILE", "METHODS", "read_map", "write_map"]
