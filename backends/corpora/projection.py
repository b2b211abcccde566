"""2-D projections of a corpus: UMAP on a FAISS kNN graph, or PCA. Cached on disk by content hash.

Large corpora (more than ``ProjectionParams.sample`` rows, 100,000 by default): UMAP is fitted on a
random sample and every other item is placed by its nearest sample items in the original space
(FAISS search in batches; the inverse-distance-weighted mean of their 2-D positions), so the map's
cost grows with the sample, not the corpus (bench/bench_projection_sampled.py measures time and
trustworthiness against a full fit).
"""
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
    sample: int = 100_000  # UMAP is fitted on at most this many rows; the rest are placed (0: fit all)

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
        sample = int(self.sample)
        if sample and sample < 1_000:
            raise InputError(f"sample must be 0 (fit every row) or at least 1,000 rows, but is {self.sample}")
        return ProjectionParams(self.method, min(nn, max(2, n_rows - 1)), md, self.metric, int(self.seed), sample)


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
    key = _cache_key(len(x), params, fingerprint or content_key(x))
    arrays, _hit = cache.get_or_compute(
        "projections", key, lambda: {"xy": _compute(x, params, progress, exact_below, device)}
    )
    return arrays["xy"]


def _cache_key(n: int, params: ProjectionParams, fingerprint: str) -> str:
    # the sample size matters only above it: smaller corpora keep their cached maps
    key_params = {k: v for k, v in params.__dict__.items() if k != "sample" or (v and n > v)}
    return content_key("projection-v1", fingerprint, key_params)


def is_cached(n: int, params: ProjectionParams, *, cache: ArtifactCache, fingerprint: str) -> bool:
    """Whether project() of an n-row corpus with this fingerprint and params would come from the cache
    (a map drawn at once) rather than be computed (UMAP: seconds to minutes)."""
    try:
        params = params.validated(n)
    except InputError:  # refused by project() with its message
        return False
    return cache.path("projections", _cache_key(n, params, fingerprint)).exists()


def seed_projection(cache: ArtifactCache, fingerprint: str, xy: np.ndarray, params: ProjectionParams) -> bool:
    """Put a map computed elsewhere (an ingest's map.parquet, made with `params`) in the cache, where
    `project` finds it for the same corpus and params instead of computing it. False when the cache
    holds one already (that one is kept)."""
    xy = np.ascontiguousarray(xy, dtype=np.float32)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"a map must have shape (N, 2), but has shape {xy.shape}")
    key = _cache_key(len(xy), params.validated(len(xy)), fingerprint)
    with cache.lock("projections", key):
        if cache.get_arrays("projections", key) is not None:
            return False
        cache.put_arrays("projections", key, {"xy": xy})
    return True


def _compute(x: np.ndarray, p: ProjectionParams, progress: Progress | None, exact_below: int, device: str):
    report = progress or (lambda frac, msg: None)
    if p.method == "pca":
        report(0.1, "PCA")
        xy = pca_2d(x)
    elif p.sample and len(x) > p.sample:
        xy = _sampled_umap(x, p, report, exact_below, device)
    else:
        report(0.05, f"kNN graph (FAISS, k={p.n_neighbors})")
        idx, dist = knn_graph(x, p.n_neighbors, metric=p.metric, exact_below=exact_below, device=device)
        report(0.3, "UMAP layout")
        xy = umap_from_knn(x, idx, dist, p)
    report(1.0, "done")
    return normalize_xy(xy)


def _sampled_umap(x: np.ndarray, p: ProjectionParams, report, exact_below: int, device: str) -> np.ndarray:
    """UMAP on p.sample random rows, the rest placed among them (see the module docstring)."""
    n = len(x)
    rng = np.random.default_rng(p.seed)
    fit = np.sort(rng.choice(n, size=p.sample, replace=False))
    report(0.02, f"kNN graph of a {p.sample:,}-row sample (FAISS, k={p.n_neighbors})")
    xs = np.ascontiguousarray(x[fit])
    idx, dist = knn_graph(xs, p.n_neighbors, metric=p.metric, exact_below=exact_below, device=device)
    report(0.15, f"UMAP layout of the sample ({p.sample:,} of {n:,} rows)")
    ys = umap_from_knn(xs, idx, dist, p)
    report(0.6, f"placing the other {n - p.sample:,} rows by their nearest sample rows")
    xy = np.empty((n, 2), np.float32)
    xy[fit] = ys
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    xy[rest] = place_by_neighbours(xs, ys, x[rest], metric=p.metric, k=min(10, p.n_neighbors),
                                   progress=lambda f: report(0.6 + 0.38 * f, f"placing rows: {f:.0%}"))
    return xy


def place_by_neighbours(fitted: np.ndarray, fitted_xy: np.ndarray, queries: np.ndarray, *, metric: str = "cosine",
                        k: int = 10, batch: int = 50_000, progress=None) -> np.ndarray:
    """2-D positions for new rows: the inverse-distance-weighted mean of the positions of their k
    nearest fitted rows (FAISS; exact for small fits, HNSW above 20,000). (Q, 2) float32."""
    from backends.corpora.index import VectorIndex

    index = VectorIndex(fitted, metric=metric)
    out = np.empty((len(queries), 2), np.float32)
    for s in range(0, len(queries), batch):
        d, i = index.search(queries[s:s + batch], k)
        d = np.maximum(d.astype(np.float64), 0.0)
        w = 1.0 / (d + 1e-3 * (np.median(d[:, :1]) + 1e-9))
        w[i < 0] = 0.0
        w /= w.sum(1, keepdims=True)
        out[s:s + batch] = np.einsum("qk,qkc->qc", w, fitted_xy[np.maximum(i, 0)]).astype(np.float32)
        if progress is not None:
            progress(min(1.0, (s + batch) / len(queries)))
    return out


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


PCA_CHUNK = 65_536  # rows per block of the covariance pass and the projection
PCA_SAMPLE = 200_000  # rows the axes are computed from (all of them below this)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components' coordinates, (N, 2) float32. Above 20,000 rows the axes
    come from the covariance matrix, accumulated over blocks of rows (no centred copy of x), of at most
    PCA_SAMPLE rows (a fixed random sample above that), and every row is projected on them in blocks:
    a million 384-d rows in seconds, where a randomized SVD of the centred copy took 30 s and 1.5 GB more."""
    if len(x) > 20_000:
        return _pca_2d_covariance(x)
    xc = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    out = xc @ comps.T
    if out.shape[1] < 2:
        out = np.concatenate([out, np.zeros((len(out), 2 - out.shape[1]), np.float32)], 1)
    return out.astype(np.float32)


def _pca_2d_covariance(x: np.ndarray) -> np.ndarray:
    n, d = x.shape
    rows = np.arange(n) if n <= PCA_SAMPLE else np.sort(np.random.default_rng(0).choice(n, PCA_SAMPLE, replace=False))
    shift = x[rows[:PCA_CHUNK]].mean(0, dtype=np.float64)  # a rough centre first: float32 products stay small
    total = np.zeros(d, np.float64)
    cov = np.zeros((d, d), np.float64)
    for a in range(0, len(rows), PCA_CHUNK):
        block = (x[rows[a:a + PCA_CHUNK]] - shift).astype(np.float32)
        total += block.sum(0, dtype=np.float64)
        cov += (block.T @ block).astype(np.float64)
    mean = total / len(rows)
    cov = cov / len(rows) - np.outer(mean, mean)
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, ::-1][:, :2]
    comps *= np.where(comps[np.abs(comps).argmax(0), range(comps.shape[1])] < 0, -1.0, 1.0)  # a fixed sign
    centre = (shift + mean).astype(np.float32)
    comps = comps.astype(np.float32)
    out = np.empty((n, 2), np.float32)
    for a in range(0, n, PCA_CHUNK):
        out[a:a + PCA_CHUNK] = (x[a:a + PCA_CHUNK] - centre) @ comps
    return out


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
