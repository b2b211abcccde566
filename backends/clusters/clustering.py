"""Clusters of a corpus: FAISS k-means, HDBSCAN on a reduction, agglomerative; metrics; few-shot labels.

Clustering runs on the ORIGINAL vectors by default (optionally on a PCA or UMAP reduction, which
HDBSCAN needs in high dimensions). Results are cached by content hash::

    res = run_clustering(vectors, ClusterParams(method="kmeans", k=0), cache=cache)  # k=0: estimate k
    res.labels       # int64 (N,), -1 = noise (HDBSCAN only)
    res.curve        # {"k": [...], "score": [...], "estimator": "silhouette", "best": 7}
    label_metrics(res.labels, truth)     # {"nmi", "ari", "purity", ...}
    propagate_labels(vectors, idx, y)    # few-shot: seeded k-means or label spreading on a kNN graph

Naming clusters in a text–image space lives in backends/clusters/names.py.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from backends.cache import ArtifactCache, content_key
from backends.errors import InputError

METHODS = ("kmeans", "hdbscan", "agglomerative")
SPACES = ("original", "pca", "umap")
ESTIMATORS = ("silhouette", "eigengap")
METRICS = ("cosine", "euclidean")
LINKAGES = ("ward", "average", "complete")
PROPAGATION = ("spreading", "kmeans", "opta")

MAX_K = 200
MAX_AGGLOMERATIVE = 5_000  # O(N²) memory and time
SILHOUETTE_SAMPLE = 2_000
EIGENGAP_SAMPLE = 3_000
HDBSCAN_MAX_DIM = 20  # HDBSCAN slows sharply with dimension: reduce to this many first

Progress = Callable[[float, str], None]


# ---------------------------------------------------------------------------------------
# Parameters and results


@dataclass(frozen=True)
class ClusterParams:
    """What to cluster and how.

    method: "kmeans" (FAISS), "hdbscan" (sklearn, on a reduction) or "agglomerative" (small sets).
    k: number of clusters; 0 estimates it over k_min..k_max with `estimator` (kmeans, agglomerative).
    space: "original" vectors, or a "pca" / "umap" reduction to `dims` dimensions.
    metric: "cosine" (rows L2-normalised first) or "euclidean".
    """

    method: str = "kmeans"
    k: int = 0
    k_min: int = 2
    k_max: int = 15
    estimator: str = "silhouette"
    space: str = "original"
    dims: int = 10
    metric: str = "cosine"
    min_cluster_size: int = 10
    min_samples: int = 0  # 0: same as min_cluster_size (sklearn's default)
    linkage: str = "ward"
    n_init: int = 5
    seed: int = 0

    def validated(self, n: int, d: int) -> ClusterParams:
        # 1. Names from fixed menus
        for name, value, allowed in (("method", self.method, METHODS), ("space", self.space, SPACES),
                                     ("estimator", self.estimator, ESTIMATORS), ("metric", self.metric, METRICS),
                                     ("linkage", self.linkage, LINKAGES)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, but is {value!r}")
        # 2. Numbers
        k, k_min, k_max = _as_int(self.k, "k"), _as_int(self.k_min, "k_min"), _as_int(self.k_max, "k_max")
        if self.method != "hdbscan":
            if k != 0:
                check_k(k, n)
            else:
                if k_min < 2:
                    raise InputError(f"k_min must be at least 2, but is {k_min}")
                if k_max < k_min:
                    raise InputError(f"k_max must be at least k_min ({k_min}), but is {k_max}")
                if k_min > n - 1:
                    raise InputError(f"k_min must be below the number of points ({n}), but is {k_min}")
                k_max = min(k_max, n - 1, MAX_K)
        dims = _as_int(self.dims, "dims")
        if self.space != "original" and not 2 <= dims <= 100:
            raise InputError(f"dims must be between 2 and 100, but is {dims}")
        if self.space == "umap" and n < dims + 3:
            raise InputError(f"a {dims}-d UMAP reduction needs at least {dims + 3} points, but there are {n}; "
                             f"use space 'original' or fewer dims")
        mcs = _as_int(self.min_cluster_size, "min_cluster_size")
        if self.method == "hdbscan" and not 2 <= mcs <= max(2, n):
            raise InputError(f"min_cluster_size must be between 2 and the number of points ({n}), but is {mcs}")
        ms = _as_int(self.min_samples, "min_samples")
        if ms < 0:
            raise InputError(f"min_samples must be 0 (automatic) or more, but is {ms}")
        n_init = _as_int(self.n_init, "n_init")
        if not 1 <= n_init <= 50:
            raise InputError(f"n_init must be between 1 and 50, but is {n_init}")
        if self.method == "agglomerative" and n > MAX_AGGLOMERATIVE:
            raise InputError(f"agglomerative clustering is limited to {MAX_AGGLOMERATIVE:,} points (it needs "
                             f"O(N²) memory), but the corpus has {n:,}; use kmeans or hdbscan")
        seed = _as_int(self.seed, "seed")
        if not 0 <= seed <= MAX_SEED:  # FAISS takes a 32-bit seed (k-means runs use seed·1000 + r)
            raise InputError(f"seed must be between 0 and {MAX_SEED:,}, but is {seed}")
        return ClusterParams(self.method, k, k_min, k_max, self.estimator, self.space, min(dims, d) if
                             self.space == "pca" else dims, self.metric, mcs, ms, self.linkage, n_init, seed)


MAX_SEED = 2_000_000


@dataclass
class ClusterResult:
    labels: np.ndarray  # int64 (N,), 0..k-1, -1 = noise
    k: int  # clusters found (noise excluded)
    params: ClusterParams
    silhouette: float  # on the original vectors (sampled for large N); nan when undefined
    silhouette_space: float  # in the space the clustering ran in (same as silhouette for "original")
    centroids: np.ndarray  # float32 (k, D): mean ORIGINAL vector of each cluster
    curve: dict | None = None  # k estimation: {"k", "score", "estimator", "best"}
    inertia: float | None = None  # k-means objective in its space
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=self.k)

    @property
    def noise_fraction(self) -> float:
        return float((self.labels < 0).mean())

    def to_arrays(self) -> dict[str, np.ndarray]:
        extra = {"curve": self.curve, "inertia": self.inertia, "seconds": self.seconds, "notes": self.notes,
                 "silhouette": self.silhouette, "silhouette_space": self.silhouette_space, "k": self.k}
        return {"labels": self.labels, "centroids": self.centroids,
                "info": np.array(json.dumps(extra, default=float))}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: ClusterParams) -> ClusterResult:
        info = json.loads(str(arrays["info"]))
        return cls(labels=arrays["labels"].astype(np.int64), k=int(info["k"]), params=params,
                   silhouette=float(info["silhouette"]), silhouette_space=float(info["silhouette_space"]),
                   centroids=arrays["centroids"].astype(np.float32), curve=info["curve"], inertia=info["inertia"],
                   seconds=float(info["seconds"]), notes=list(info["notes"]))


def _as_int(value, name: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, but is {value!r}") from None
    if f != f or f != int(f):
        raise InputError(f"{name} must be a whole number, but is {value!r}")
    return int(f)


def check_k(k, n: int) -> int:
    k = _as_int(k, "k")
    if k < 2:
        raise InputError(f"k must be at least 2, but is {k}")
    if k > n:
        raise InputError(f"k must be at most the number of points ({n}), but is {k}")
    if k > MAX_K:
        raise InputError(f"k must be at most {MAX_K}, but is {k}")
    return k


def check_vectors(x, *, what: str = "vectors") -> np.ndarray:
    """float32 (N, D) with N ≥ 2, finite, not all identical; InputError naming what is wrong."""
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise InputError(f"{what}: could not read as a numeric array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array (points × dimensions), got shape {arr.shape}")
    n, d = arr.shape
    if n < 2:
        raise InputError(f"{what}: clustering needs at least 2 points, but there {'is' if n == 1 else 'are'} {n}")
    if d == 0:
        raise InputError(f"{what}: points have 0 dimensions")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        raise InputError(f"{what}: {len(rows)} point(s) contain NaN or Inf (first: row {rows[0]})")
    if np.all(arr == arr[0]):
        raise InputError(f"{what}: all {n} points are identical; there are no clusters to find")
    return arr


# ---------------------------------------------------------------------------------------
# Building blocks


def _faiss():
    import faiss

    return faiss


def prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """The vectors k-means sees: L2-normalised rows for cosine, as is for euclidean."""
    from backends.corpora.index import normalize_rows

    return normalize_rows(x) if metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)


def kmeans(x: np.ndarray, k: int, *, n_init: int = 5, seed: int = 0, niter: int = 25,
           init_centroids: np.ndarray | None = None, init: str = "k-means++",
           max_points_per_centroid: int = 1024, gpu: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """FAISS k-means with `n_init` restarts (best objective kept).

    x: float32 (N, D). init: "k-means++" (seeds drawn on a sample of at most 50·k points) or
    "random" (FAISS's own). Each restart trains on a random sample of at most
    max_points_per_centroid·k points (FAISS's subsampling); the final assignment covers all points.
    Returns (labels int64 (N,), centroids float32 (k, D), inertia = sum of squared distances to the
    nearest centroid).
    """
    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    k = check_k(k, n)
    if init not in ("k-means++", "random"):
        raise InputError(f"init must be 'k-means++' or 'random', but is {init!r}")
    rng = np.random.default_rng(seed)
    best = None
    runs = 1 if init_centroids is not None else max(1, int(n_init))
    for r in range(runs):
        km = faiss.Kmeans(d, k, niter=niter, nredo=1, seed=int(seed) * 1000 + r + 1, verbose=False, gpu=gpu,
                          max_points_per_centroid=int(max_points_per_centroid), min_points_per_centroid=1)
        if init_centroids is not None:
            start = np.ascontiguousarray(init_centroids, dtype=np.float32)
        elif init == "k-means++":
            start = kmeans_plus_plus(x, k, rng)
        else:
            start = None
        if start is not None:
            km.train(x, init_centroids=start)
        else:
            km.train(x)
        obj = float(km.obj[-1]) if len(km.obj) else float("inf")
        if best is None or obj < best[0]:
            best = (obj, km)
    km = best[1]
    dist, labels = km.index.search(x, 1)
    return labels[:, 0].astype(np.int64), km.centroids.copy(), float(dist.sum())


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator, *, sample_per_centroid: int = 50) -> np.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii) drawn from a random sample of x: float32 (k, D)."""
    n = len(x)
    m = min(n, max(k * sample_per_centroid, 1_000))
    xs = x[rng.choice(n, m, replace=False)] if m < n else x
    xs = xs.astype(np.float32)
    sq = (xs * xs).sum(1)
    centres = [int(rng.integers(len(xs)))]
    d2 = np.maximum(sq - 2 * xs @ xs[centres[0]] + sq[centres[0]], 0)
    for _ in range(1, k):
        tot = d2.sum()
        j = int(rng.choice(len(xs), p=d2 / tot)) if tot > 0 else int(rng.integers(len(xs)))
        centres.append(j)
        d2 = np.minimum(d2, np.maximum(sq - 2 * xs @ xs[j] + sq[j], 0))
    return np.ascontiguousarray(xs[centres])


def silhouette(x: np.ndarray, labels: np.ndarray, *, metric: str = "euclidean", sample: int = SILHOUETTE_SAMPLE,
               seed: int = 0) -> float:
    """Mean silhouette over non-noise points (a random sample of `sample` for large N); nan if undefined."""
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    xs, ls = x[keep], labels[keep]
    n_lab = len(np.unique(ls))
    if n_lab < 2 or n_lab >= len(ls):
        return float("nan")
    if len(ls) > sample:
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(ls), sample, replace=False)
        xs, ls = xs[pick], ls[pick]
        if len(np.unique(ls)) < 2:
            return float("nan")
    return float(silhouette_score(xs, ls, metric=metric))


def reduce(x: np.ndarray, space: str, dims: int, *, metric: str = "cosine", seed: int = 0,
           cache: ArtifactCache | None = None, fingerprint: str | None = None) -> np.ndarray:
    """A PCA or UMAP reduction of x to `dims` dimensions (cached); "original" returns x."""
    if space == "original":
        return x
    if space not in SPACES:
        raise InputError(f"space must be one of {', '.join(SPACES)}, but is {space!r}")

    def compute():
        if space == "pca":
            return {"z": pca(prepare(x, metric), dims, seed=seed)}
        return {"z": umap_nd(x, dims, metric=metric, seed=seed)}

    if cache is None:
        return compute()["z"]
    key = content_key("reduction-v1", fingerprint or content_key(x), space, int(dims), metric, int(seed))
    return cache.get_or_compute("reductions", key, compute)[0]["z"]


def pca(x: np.ndarray, dims: int, *, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, x.shape[1], x.shape[0])
    solver = "randomized" if len(x) > 20_000 else "full"
    return PCA(n_components=dims, svd_solver=solver, random_state=seed).fit_transform(x).astype(np.float32)


def umap_nd(x: np.ndarray, dims: int, *, metric: str = "cosine", n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """UMAP to `dims` dimensions on a FAISS kNN graph (min_dist=0: dense clumps, as recommended for clustering)."""
    import os
    import warnings

    from backends.corpora.projection import _numba_cache_dir, knn_graph

    os.environ.setdefault("NUMBA_CACHE_DIR", str(_numba_cache_dir()))
    import umap

    n = len(x)
    nn = int(min(n_neighbors, max(2, n - 1)))
    idx, dist = knn_graph(x, nn, metric=metric)
    reducer = umap.UMAP(n_neighbors=nn, min_dist=0.0, n_components=int(dims), metric=metric,
                        precomputed_knn=(idx, dist), random_state=None,
                        init="spectral" if n > max(nn + 2, dims + 2) else "random", low_memory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reducer.fit_transform(x).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Estimating k


def estimate_k(x: np.ndarray, k_min: int = 2, k_max: int = 15, *, estimator: str = "silhouette",
               metric: str = "euclidean", n_init: int = 3, seed: int = 0, method: str = "kmeans",
               linkage: str = "ward") -> dict:
    """Score every k in k_min..k_max; returns {"k": [...], "score": [...], "estimator", "best"}.

    silhouette: cluster with each k (k-means, or cuts of one agglomerative tree) and score a sample.
    eigengap: eigenvalues λ of the normalised Laplacian of a kNN graph; score(k) = λ_{k+1} − λ_k
    (a large gap after the k-th eigenvalue means k well-separated groups).
    """
    if estimator not in ESTIMATORS:
        raise InputError(f"estimator must be one of {', '.join(ESTIMATORS)}, but is {estimator!r}")
    n = len(x)
    k_min, k_max = int(k_min), int(min(k_max, n - 1, MAX_K))
    if k_min < 2:
        raise InputError(f"k_min must be at least 2, but is {k_min}")
    if k_max < k_min:
        raise InputError(f"k_max must be at least k_min ({k_min}) and below the number of points ({n}), "
                         f"but is {k_max}")
    ks = list(range(k_min, k_max + 1))
    if estimator == "eigengap":
        lam = laplacian_spectrum(x, k_max + 1, seed=seed)
        ks = [k for k in ks if k < len(lam)]
        scores = [float(lam[k] - lam[k - 1]) for k in ks]
        curve = {"k": ks, "score": scores, "estimator": estimator, "eigenvalues": lam.tolist()}
    else:
        sil_metric = "euclidean"
        scores = []
        tree = linkage_tree(x, linkage) if method == "agglomerative" else None
        for k in ks:
            labels = cut_tree(tree, k) if tree is not None else kmeans(x, k, n_init=n_init, seed=seed)[0]
            s = silhouette(x, labels, metric=sil_metric, seed=seed)
            scores.append(s if s == s else -1.0)
        curve = {"k": ks, "score": scores, "estimator": estimator}
    curve["best"] = int(ks[int(np.argmax(curve["score"]))])
    return curve


def laplacian_spectrum(x: np.ndarray, n_eig: int, *, n_neighbors: int = 10, seed: int = 0,
                       sample: int = EIGENGAP_SAMPLE) -> np.ndarray:
    """The n_eig smallest eigenvalues of the symmetric normalised Laplacian of a kNN graph (self-tuning weights)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    from backends.corpora.index import VectorIndex

    if len(x) > sample:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))]
    n = len(x)
    kk = int(min(n_neighbors + 1, n))
    index = VectorIndex(x, metric="euclidean", kind="flat")
    dist, idx = index.search(x, kk)
    sigma = np.maximum(dist[:, -1], 1e-12)  # local scale (Zelnik-Manor & Perona)
    rows = np.repeat(np.arange(n), kk)
    w = np.exp(-(dist ** 2) / (sigma[:, None] * sigma[idx])).ravel()
    W = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    W.setdiag(0)
    W = W.maximum(W.T)
    deg = np.asarray(W.sum(1)).ravel()
    dinv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    S = sp.diags(dinv) @ W @ sp.diags(dinv)
    if n <= 600:
        n_eig = int(min(n_eig, n))
        vals = np.linalg.eigvalsh(S.toarray())[::-1][:n_eig]
    else:
        n_eig = int(min(n_eig, n - 2))
        vals = eigsh(S, k=n_eig, which="LA", tol=1e-6, v0=np.random.default_rng(seed).random(n),
                     maxiter=5000)[0][::-1]
    return np.clip(1.0 - np.sort(vals)[::-1], 0.0, 2.0)  # Laplacian eigenvalues, ascending


def linkage_tree(x: np.ndarray, linkage: str = "ward") -> np.ndarray:
    from scipy.cluster.hierarchy import linkage as scipy_linkage

    return scipy_linkage(x.astype(np.float64), method=linkage, metric="euclidean")


def cut_tree(tree: np.ndarray, k: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster

    return relabel_by_size(fcluster(tree, t=k, criterion="maxclust").astype(np.int64) - 1)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0..k-1 from largest to smallest; noise (-1) stays -1."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full_like(labels, -1)
    uniq, counts = np.unique(labels[labels >= 0], return_counts=True)
    for new, old in enumerate(uniq[np.argsort(-counts, kind="stable")]):
        out[labels == old] = new
    return out


# ---------------------------------------------------------------------------------------
# Clustering


def run_clustering(vectors: np.ndarray, params: ClusterParams = ClusterParams(), *,
                   cache: ArtifactCache | None = None, fingerprint: str | None = None,
                   progress: Progress | None = None, gpu: bool = False) -> ClusterResult:
    """Cluster (N, D) vectors; cached under a hash of (vectors, params) when a cache is given.

    gpu: run FAISS k-means on the GPU (when faiss-gpu sees one; ignored otherwise).
    """
    x = check_vectors(vectors)
    params = params.validated(*x.shape)
    if cache is None:
        return _cluster(x, params, progress, None, fingerprint, gpu)
    key = content_key("clusters-v1", fingerprint or content_key(x), asdict(params))
    arrays, _hit = cache.get_or_compute("clusters", key,
                                        lambda: _cluster(x, params, progress, cache, fingerprint, gpu).to_arrays())
    return ClusterResult.from_arrays(arrays, params)


def _cluster(x: np.ndarray, p: ClusterParams, progress: Progress | None, cache, fingerprint,
             gpu: bool = False) -> ClusterResult:
    report = progress or (lambda frac, msg: None)
    t0 = time.perf_counter()
    notes: list[str] = []
    # 1. The space to cluster in
    space, dims = p.space, p.dims
    if p.method == "hdbscan" and space == "original" and x.shape[1] > HDBSCAN_MAX_DIM:
        space, dims = "pca", HDBSCAN_MAX_DIM
        notes.append(f"HDBSCAN ran on a {HDBSCAN_MAX_DIM}-d PCA reduction ({x.shape[1]} dimensions are too many)")
    report(0.05, f"preparing the {space} space")
    z = reduce(x, space, dims, metric=p.metric, seed=p.seed, cache=cache, fingerprint=fingerprint)
    z = prepare(z, p.metric) if space == "original" else np.ascontiguousarray(z, dtype=np.float32)
    if np.all(z == z[0]):
        raise InputError("vectors: all points point the same way, so with metric 'cosine' they are identical; "
                         "use metric 'euclidean'")
    # 2. k
    curve, k = None, p.k
    if p.method != "hdbscan" and k == 0:
        report(0.2, f"estimating k ({p.estimator}, {p.k_min}..{p.k_max})")
        curve = estimate_k(z, p.k_min, p.k_max, estimator=p.estimator, n_init=min(p.n_init, 3), seed=p.seed,
                           method=p.method, linkage=p.linkage)
        k = curve["best"]
    # 3. Cluster
    report(0.6, f"{p.method}" + (f" (k={k})" if k else ""))
    inertia = None
    if p.method == "kmeans":
        from backends.corpora.index import gpu_count

        labels, _, inertia = kmeans(z, k, n_init=p.n_init, seed=p.seed, gpu=bool(gpu) and gpu_count() > 0)
    elif p.method == "agglomerative":
        labels = cut_tree(linkage_tree(z, p.linkage), k)
    else:
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(min_cluster_size=p.min_cluster_size, min_samples=p.min_samples or None,
                         copy=True).fit_predict(z)
        if (labels < 0).all():
            notes.append("HDBSCAN found no clusters (every point is noise); try a smaller min_cluster_size")
    labels = relabel_by_size(labels)
    k_found = int(labels.max() + 1) if (labels >= 0).any() else 0
    # 4. Scores
    report(0.9, "silhouette")
    sil = silhouette(x, labels, metric=p.metric, seed=p.seed)
    sil_space = sil if space == "original" else silhouette(z, labels, metric="euclidean", seed=p.seed)
    centroids = cluster_means(x, labels, k_found)
    report(1.0, "done")
    return ClusterResult(labels=labels, k=k_found, params=p, silhouette=sil, silhouette_space=sil_space,
                         centroids=centroids, curve=curve, inertia=inertia,
                         seconds=round(time.perf_counter() - t0, 3), notes=notes)


def cluster_means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, x.shape[1]), np.float32)
    for c in range(k):
        m = labels == c
        if m.any():
            out[c] = x[m].mean(0)
    return out


# ---------------------------------------------------------------------------------------
# Metrics against labels / factors


def label_metrics(pred: np.ndarray, truth) -> dict:
    """NMI, ARI and purity of a clustering against a label column (noise counts as one more cluster)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = np.asarray(pred)
    truth = np.asarray(truth).astype(str)
    if len(pred) != len(truth):
        raise InputError(f"truth has {len(truth)} values but there are {len(pred)} cluster labels")
    return {"nmi": float(normalized_mutual_info_score(truth, pred)), "ari": float(adjusted_rand_score(truth, pred)),
            "purity": purity(pred, truth), "n_classes": int(len(np.unique(truth)))}


def purity(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of points whose cluster's majority class is their class."""
    import pandas as pd

    ct = pd.crosstab(np.asarray(pred), np.asarray(truth).astype(str))
    return float(ct.max(axis=1).sum() / max(1, ct.to_numpy().sum()))


def confusion(pred: np.ndarray, truth) -> pandas.DataFrame:  # noqa: F821
    """Counts: one row per cluster (noise as -1), one column per class."""
    import pandas as pd

    ct = pd.crosstab(pd.Series(np.asarray(pred), name="cluster"), pd.Series(np.asarray(truth).astype(str), name=""))
    return ct


def factor_columns(meta, *, max_classes: int = 50) -> list[str]:
    """Metadata columns that look like labels or factors: 2..max_classes distinct values, not free text."""
    import pandas as pd

    out = []
    n = len(meta)
    for c in meta.columns:
        if c == "id" or c.startswith("cluster"):
            continue
        s = meta[c]
        if pd.api.types.is_float_dtype(s) and not np.allclose(s.dropna(), np.round(s.dropna())):
            continue
        u = s.nunique(dropna=True)
        if 2 <= u <= max_classes and u < max(3, n // 2):
            out.append(c)
    return out


def evaluate(labels: np.ndarray, meta, columns: list[str] | None = None) -> dict[str, dict]:
    """{column: {"nmi", "ari", "purity", "n_classes"}} for each label / factor column."""
    cols = factor_columns(meta) if columns is None else columns
    return {c: label_metrics(labels, meta[c].to_numpy()) for c in cols}


def majority_metadata(labels: np.ndarray, meta, columns: list[str] | None = None) -> list[dict]:
    """Per cluster: {column: (majority value, fraction)} over the factor columns."""
    cols = factor_columns(meta) if columns is None else columns
    k = int(labels.max() + 1) if (labels >= 0).any() else 0
    out = []
    for c in range(k):
        m = labels == c
        row = {}
        for col in cols:
            vc = meta[col][m].astype(str).value_counts()
            if len(vc):
                row[col] = (str(vc.index[0]), float(vc.iloc[0] / m.sum()))
        out.append(row)
    return out


def majority_name(majority: dict, *, min_fraction: float = 0.5, max_parts: int = 3) -> str:
    """'colour=red (96%) · shape=circle (71%)': the most telling majority values of one cluster."""
    parts = sorted(majority.items(), key=lambda kv: -kv[1][1])
    shown = [f"{col}={val} ({frac:.0%})" for col, (val, frac) in parts if frac >= min_fraction][:max_parts]
    if not shown and parts:
        col, (val, frac) = parts[0]
        shown = [f"mixed; most {col}={val} ({frac:.0%})"]
    return " · ".join(shown)


# ---------------------------------------------------------------------------------------
# Few-shot labelling: propagate a few labels transductively


def knn_affinity(x: np.ndarray, n_neighbors: int = 10, *, metric: str = "cosine"):
    """Symmetric sparse kNN affinity matrix (self-tuning Gaussian weights) from a FAISS index."""
    import scipy.sparse as sp

    from backends.corpora.index import VectorIndex

    n = len(x)
    kk = int(min(n_neighbors + 1, n))
    dist, idx = VectorIndex(x, metric=metric, kind="flat" if n < 20_000 else "auto").search(x, kk)
    sigma = np.maximum(dist[:, -1], 1e-12)
    idx = np.where(idx < 0, np.arange(n)[:, None], idx)
    w = np.exp(-(dist ** 2) / (sigma[:, None] * sigma[idx])).ravel()
    W = sp.csr_matrix((w, (np.repeat(np.arange(n), kk), idx.ravel())), shape=(n, n))
    W.setdiag(0)
    W.eliminate_zeros()
    return W.maximum(W.T)


def propagate_labels(vectors: np.ndarray, labelled: np.ndarray, labels, *, method: str = "spreading",
                     metric: str = "cosine", n_neighbors: int = 10, alpha: float = 0.99, n_iter: int = 50,
                     seed: int = 0) -> dict:
    """Labels for every point from a few labelled ones.

    labelled: int indices (M,); labels: their labels (M,), any hashable values.
    method "spreading": label spreading (Zhou et al.) on the FAISS kNN graph, F ← αSF + (1−α)Y.
    method "kmeans": k-means seeded with each class's mean of labelled points; cluster c → class c
    (transductive few-shot, "clustering is all you need").
    method "opta": BECLR's optimal-transport alignment (Poulakakis-Daktylidis & Jamali-Rad, ICLR
    2024): the class prototypes are moved onto the unlabelled items' distribution by an entropic
    optimal-transport plan (Sinkhorn, uniform marginals), then each item takes its nearest aligned
    prototype's class. Labelled points keep their labels.
    Returns {"pred": (N,) array of labels, "confidence": (N,) float32, "classes": [...]}.
    """
    x = check_vectors(vectors)
    if method not in PROPAGATION:
        raise InputError(f"method must be one of {', '.join(PROPAGATION)}, but is {method!r}")
    idx = np.asarray(labelled, dtype=np.int64).ravel()
    lab = np.asarray(labels, dtype=object).ravel()
    if len(idx) != len(lab):
        raise InputError(f"labels: {len(lab)} labels for {len(idx)} labelled points")
    if len(idx) == 0:
        raise InputError("labels: label at least one point of each class (none given)")
    if idx.min() < 0 or idx.max() >= len(x):
        raise InputError(f"labels: point indices must be in 0..{len(x) - 1}")
    classes = sorted({str(v) for v in lab})
    if len(classes) < 2:
        raise InputError(f"labels: at least 2 different labels are needed, but all are {classes[0]!r}")
    cls_index = {c: i for i, c in enumerate(classes)}
    y = np.array([cls_index[str(v)] for v in lab])
    z = prepare(x, metric)
    if method == "opta":
        protos = np.stack([z[idx[y == c]].mean(0) for c in range(len(classes))])
        unl = np.setdiff1d(np.arange(len(z)), idx)
        aligned = opta_align(protos, z[unl] if len(unl) else z)
        d = ((z[:, None, :] - aligned[None]) ** 2).sum(-1) if len(z) * len(aligned) < 5e7 else None
        if d is None:  # large corpora: nearest aligned prototype in chunks
            pred = np.concatenate([((z[s:s + 100_000, None, :] - aligned[None]) ** 2).sum(-1).argmin(1)
                                   for s in range(0, len(z), 100_000)])
            conf = np.ones(len(z), np.float32)
        else:
            pred = d.argmin(1)
            e = np.exp(-(d - d.min(1, keepdims=True)) / max(1e-9, float(np.median(d))))
            conf = (e.max(1) / e.sum(1)).astype(np.float32)
    elif method == "kmeans":
        init = np.stack([z[idx[y == c]].mean(0) for c in range(len(classes))])
        assign, cents, _ = kmeans(z, len(classes), init_centroids=init, seed=seed)
        d = ((z[:, None, :] - cents[None]) ** 2).sum(-1) if len(z) * len(cents) < 5e7 else None
        pred = assign
        if d is not None:
            e = np.exp(-(d - d.min(1, keepdims=True)) / max(1e-9, float(np.median(d))))
            conf = (e.max(1) / e.sum(1)).astype(np.float32)
        else:
            conf = np.ones(len(z), np.float32)
    else:
        import scipy.sparse as sp

        W = knn_affinity(z, n_neighbors, metric="euclidean" if metric == "cosine" else metric)
        deg = np.asarray(W.sum(1)).ravel()
        dinv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
        S = sp.diags(dinv) @ W @ sp.diags(dinv)
        Y = np.zeros((len(z), len(classes)), np.float64)
        Y[idx, y] = 1.0
        F = Y.copy()
        for _ in range(int(n_iter)):
            F = alpha * (S @ F) + (1 - alpha) * Y
        tot = F.sum(1)
        pred = F.argmax(1)
        conf = np.where(tot > 0, F.max(1) / np.maximum(tot, 1e-12), 0.0).astype(np.float32)
        unreached = tot <= 0
        if unreached.any():  # points in components with no label: nearest labelled class mean
            means = np.stack([z[idx[y == c]].mean(0) for c in range(len(classes))])
            pred[unreached] = ((z[unreached, None] - means[None]) ** 2).sum(-1).argmin(1)
    pred = np.asarray(pred).copy()
    pred[idx] = y
    conf[idx] = 1.0
    return {"pred": np.array(classes, dtype=object)[pred], "confidence": conf, "classes": classes}


def sinkhorn(cost: np.ndarray, a: np.ndarray, b: np.ndarray, *, reg: float = 0.05, n_iter: int = 200,
             tol: float = 1e-7) -> np.ndarray:
    """Entropic optimal transport (Cuturi 2013) in the log domain: the plan π (N, K) with row sums a
    (N,) and column sums b (K,) that minimises <π, cost> - reg·H(π). cost is scaled by its median
    first, so `reg` is relative."""
    from scipy.special import logsumexp

    c = np.asarray(cost, np.float64)
    c = c / max(float(np.median(c)), 1e-12)
    la, lb = np.log(np.asarray(a, np.float64)), np.log(np.asarray(b, np.float64))
    f, g = np.zeros(c.shape[0]), np.zeros(c.shape[1])
    for _ in range(int(n_iter)):
        f = reg * (la - logsumexp((g[None, :] - c) / reg, axis=1))
        g_new = reg * (lb - logsumexp((f[:, None] - c) / reg, axis=0))
        done = np.max(np.abs(g_new - g)) < tol
        g = g_new
        if done:
            break
    return np.exp((f[:, None] + g[None, :] - c) / reg)


def opta_align(prototypes: np.ndarray, items: np.ndarray, *, reg: float = 0.05, n_iter: int = 300,
               passes: int = 3) -> np.ndarray:
    """BECLR's OpTA: prototypes (K, D) moved onto the items' (N, D) distribution: the plan π between
    items (mass 1/N each) and prototypes (mass 1/K each) for the squared-distance cost, then each
    prototype becomes the barycentre of the items it is sent to, K·(πᵀ items); `passes` rounds of
    this (measured on digits, one label a class, cosine: nearest raw prototype 0.61, 1 / 3 / 10
    passes 0.69 / 0.73 / 0.71). (K, D) float32."""
    p = np.asarray(prototypes, np.float64)
    q = np.asarray(items, np.float64)
    n, k = len(q), len(p)
    for _ in range(int(passes)):
        cost = (q * q).sum(1)[:, None] - 2 * q @ p.T + (p * p).sum(1)[None, :]
        plan = sinkhorn(np.maximum(cost, 0.0), np.full(n, 1.0 / n), np.full(k, 1.0 / k), reg=reg, n_iter=n_iter)
        p = k * plan.T @ q
    return p.astype(np.float32)


def propagation_accuracy(pred, truth, labelled: np.ndarray) -> float:
    """Accuracy on the points that were NOT labelled (strings compared)."""
    mask = np.ones(len(pred), bool)
    mask[np.asarray(labelled, dtype=np.int64)] = False
    p = np.asarray(pred).astype(str)[mask]
    t = np.asarray(truth).astype(str)[mask]
    return float((p == t).mean()) if len(p) else float("nan")


def sample_labelled(truth, per_class: int, *, seed: int = 0) -> np.ndarray:
    """Indices of `per_class` random points of each class (a simulated annotator, for demos and tests)."""
    truth = np.asarray(truth).astype(str)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(truth):
        where = np.flatnonzero(truth == c)
        out.extend(rng.choice(where, min(per_class, len(where)), replace=False).tolist())
    return np.sort(np.array(out, dtype=np.int64))


# ---------------------------------------------------------------------------------------
# Using clusters elsewhere: a metadata column the Atlas can colour by

_ATTACH_LOCK = threading.Lock()


def attach_cluster_column(corpus, name: str, labels: np.ndarray) -> str:
    """Add (or replace) a metadata column `name` holding cluster labels ("0", "1", …, "noise").

    The Atlas lists metadata columns in its colour-by menu, so the map can be coloured by cluster.
    Only columns whose name starts with "cluster" can be replaced. The DataFrame is swapped, not
    edited in place, so readers never see a half-written column.
    """
    import re

    name = str(name or "").strip()
    if not re.fullmatch(r"cluster[\w\-]{0,40}", name):
        raise InputError(f"name must start with 'cluster' and use letters, digits, '_' or '-' (≤ 47 "
                         f"characters), but is {name!r}")
    labels = np.asarray(labels)
    if len(labels) != len(corpus):
        raise InputError(f"labels: {len(labels)} labels for a corpus of {len(corpus)} items")
    values = np.where(labels < 0, "noise", labels.astype(np.int64).astype(str))
    with _ATTACH_LOCK:
        meta = corpus.meta.copy()
        meta[name] = values
        corpus.meta = meta
    return name


__all__ = [
    "ClusterParams", "ClusterResult", "run_clustering", "kmeans", "estimate_k", "laplacian_spectrum", "reduce",
    "silhouette", "label_metrics", "purity", "confusion", "factor_columns", "evaluate", "majority_metadata",
    "majority_name", "propagate_labels", "propagation_accuracy", "sample_labelled", "attach_cluster_column",
    "check_vectors", "check_k",
]
