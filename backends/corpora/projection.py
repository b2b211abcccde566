"""2-D projections of a corpus: UMAP on a FAISS kNN graph, or PCA. Cached on disk by content hash."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backends.cache import ArtifactCache, content_key
from backends.corpora.index import METRICS
from backends.corpora.index import knn_graph as _knn_graph
from backends.errors import InputError

METHODS = ("umap", "pca")
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ProjectionParams:
    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    seed: int = 42

    def validated(self, n_rows: int) -> ProjectionParams:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, but is {self.method!r}")
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, but is {self.metric!r}")
        nn = int(self.n_neighbors)
        if not 2 <= nn <= 200:
            raise InputError(f"n_neighbors must be between 2 and 200, but is {self.n_neighbors}")
        md = float(self.min_dist)
        if not (0.0 <= md <= 1.0) or md != md:
            raise InputError(f"min_dist must be between 0 and 1, but is {self.min_dist}")
        if n_rows < 3 and self.method == "umap":
            raise InputError(f"UMAP needs at least 3 rows, but the corpus has {n_rows}; use PCA")
        return ProjectionParams(self.method, min(nn, max(2, n_rows - 1)), md, self.metric, int(self.seed))


def project(
    vectors: np.ndarray,
    params: ProjectionParams = ProjectionParams(),
    *,
    cache: ArtifactCache | None = None,
    fingerprint: str | None = None,
    progress: Progress | None = None,
    exact_below: int = 20_000,
    device: str = "cpu",
) -> np.ndarray:
    """vectors (N, D) → coordinates (N, 2) float32, scaled to roughly [-1, 1].

    With a cache, the result is stored under a key of (fingerprint or vectors' hash, params).
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    params = params.validated(len(x))
    if cache is None:
        return _compute(x, params, progress, exact_below, device)
    key = content_key("projection-v1", fingerprint or content_key(x), params.__dict__)
    arrays, _hit = cache.get_or_compute(
        "projections", key, lambda: {"xy": _compute(x, params, progress, exact_below, device)}
    )
    return arrays["xy"]


def _compute(x: np.ndarray, p: ProjectionParams, progress: Progress | None, exact_below: int, device: str):
    report = progress or (lambda frac, msg: None)
    if p.method == "pca":
        report(0.1, "PCA")
        xy = pca_2d(x)
    else:
        report(0.05, f"kNN graph (FAISS, k={p.n_neighbors})")
        idx, dist = knn_graph(x, p.n_neighbors, metric=p.metric, exact_below=exact_below, device=device)
        report(0.3, "UMAP layout")
        xy = umap_from_knn(x, idx, dist, p)
    report(1.0, "done")
    return normalize_xy(xy)


def knn_graph(x: np.ndarray, k: int, *, metric: str = "cosine", exact_below: int = 20_000, device: str = "cpu"):
    return _knn_graph(x, k, metric=metric, exact_below=exact_below, device=device)


def umap_from_knn(x: np.ndarray, idx: np.ndarray, dist: np.ndarray, p: ProjectionParams) -> np.ndarray:
    os.environ.setdefault("NUMBA_CACHE_DIR", str(_numba_cache_dir()))
    import umap  # lazy: imports numba

    reducer = umap.UMAP(
        n_neighbors=p.n_neighbors,
        min_dist=p.min_dist,
        metric=p.metric,
        precomputed_knn=(idx, dist),
        n_components=2,
        random_state=None,  # parallel layout; results are cached, so repeat visits see the same map
        # Spectral initialisation solves an eigenproblem on the whole graph: at 100k points it costs
        # more than the layout itself (measured: 200 epochs 130 s with PCA init vs > 200 s spectral,
        # trustworthiness 0.9976 both). PCA init above 20k points, spectral below.
        init=("spectral" if len(x) <= 20_000 else "pca") if len(x) > p.n_neighbors + 2 else "random",
        low_memory=True,
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reducer.fit_transform(x).astype(np.float32)


def pca_2d(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0, keepdims=True)
    if len(xc) > 20_000:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, svd_solver="randomized", random_state=0).fit_transform(xc).astype(np.float32)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    out = xc @ comps.T
    if out.shape[1] < 2:
        out = np.concatenate([out, np.zeros((len(out), 2 - out.shape[1]), np.float32)], 1)
    return out.astype(np.float32)


def normalize_xy(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float32)
    xy = xy - np.median(xy, axis=0, keepdims=True)
    scale = np.percentile(np.abs(xy), 99) or 1.0
    return (xy / scale).astype(np.float32)


def _numba_cache_dir():
    from backends.settings import default_cache_dir

    d = default_cache_dir() / "numba"
    d.mkdir(parents=True, exist_ok=True)
    return d
