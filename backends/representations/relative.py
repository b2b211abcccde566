"""Relative representations (Moschella et al., ICLR 2023): anchors, projection, similarity metrics.

Two models trained apart embed the same items in spaces that differ by (roughly) an angle-
preserving map. The cosine similarities of an item to a shared set of anchor items stay the same,
so the vector of those similarities, the *relative representation*, is comparable across spaces.

    idx = select_anchors(x_a, 300, strategy="kmeans", seed=0)     # (k,) int64 row indices
    r_a = relative_projection(x_a, x_a[idx])                       # (N, k) float32
    r_b = relative_projection(x_b, x_b[idx])                       # same anchors, other space
    compare(x_a, x_b, idx, k=10)                                   # Jaccard@k, MRR, cosine, CKA

Every function takes numpy arrays, returns numpy arrays or floats, and imports nothing heavy at
module level. Bad input raises InputError with a message naming the argument and its value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.errors import InputError

ANCHOR_STRATEGIES = ("random", "stratified", "farthest", "kmeans")
PROJECTIONS = ("cosine", "centred", "basis")
OUTPUT_NORMS = ("none", "l2", "standard", "layernorm")
METRIC_NAMES = ("jaccard", "mrr", "cosine", "cka", "knn_overlap")


# ---------------------------------------------------------------------------------------
# Input checks


def as_matrix(x, *, what: str = "x") -> np.ndarray:
    """float32 (N, D), C-contiguous and finite, or InputError naming `what`."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: could not read as a numeric array ({exc})") from None
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (items × dimensions), but has shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{what} is empty: shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contains NaN or Inf")
    return np.ascontiguousarray(arr)


def check_parallel(x_a: np.ndarray, x_b: np.ndarray, *, names: tuple[str, str] = ("space A", "space B")) -> None:
    """Two spaces compared item by item must hold the same number of items (row i = the same item)."""
    if len(x_a) != len(x_b):
        raise InputError(
            f"{names[0]} has {len(x_a)} items but {names[1]} has {len(x_b)}; relative representations compare "
            "the same items embedded twice, so both spaces must embed the same items in the same order")


def check_anchor_indices(anchors, n_items: int, *, what: str = "anchors") -> np.ndarray:
    """Anchor row indices as int64 (k,), each in 0..n_items-1, no duplicates, at least 2."""
    idx = np.asarray(anchors)
    if idx.ndim != 1:
        raise InputError(f"{what} must be a list of item indices, but has shape {idx.shape}")
    if len(idx) < 2:
        raise InputError(f"{what}: at least 2 anchors are needed, but {len(idx)} were given")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{what} must be integer item indices, but have dtype {idx.dtype}")
    bad = idx[(idx < 0) | (idx >= n_items)]
    if len(bad):
        raise InputError(f"{what}: index {int(bad[0])} is not in the corpus (it has items 0..{n_items - 1})")
    if len(np.unique(idx)) != len(idx):
        raise InputError(f"{what}: the same item is used as an anchor more than once")
    return idx.astype(np.int64)


def anchor_indices_from_ids(ids, corpus_ids) -> np.ndarray:
    """Map anchor ids (strings) to row indices of a corpus whose ids are `corpus_ids`."""
    lookup = {str(c): i for i, c in enumerate(corpus_ids)}
    out = []
    for a in ids:
        if str(a) not in lookup:
            raise InputError(f"anchors: id {str(a)!r} is not in the corpus")
        out.append(lookup[str(a)])
    return check_anchor_indices(np.asarray(out, dtype=np.int64), len(lookup))


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Anchors


def select_anchors(x, n_anchors: int, *, strategy: str = "random", labels=None, seed: int = 0,
                   candidates=None) -> np.ndarray:
    """Choose `n_anchors` items of x (N, D) as anchors; returns their row indices (int64, sorted by choice).

    strategy:
      random      uniform without replacement
      stratified  the same number from each label (needs `labels`), random within a label
      farthest    farthest-point sampling in cosine distance, from a random first item
      kmeans      k-means on the L2-normalised vectors; the item nearest to each centroid
    candidates: optional row indices the anchors must come from (e.g. a training split).
    """
    x = as_matrix(x, what="x")
    n = len(x)
    try:
        k = int(n_anchors)
    except (TypeError, ValueError):
        raise InputError(f"n_anchors must be a whole number, but is {n_anchors!r}") from None
    if strategy not in ANCHOR_STRATEGIES:
        raise InputError(f"Unknown anchor strategy: {strategy!r}. Must be one of: {', '.join(ANCHOR_STRATEGIES)}")
    pool = np.arange(n) if candidates is None else check_anchor_indices(np.asarray(candidates), n, what="candidates")
    if k < 2:
        raise InputError(f"n_anchors: at least 2 anchors are needed, but is {k}")
    if k > len(pool):
        raise InputError(f"n_anchors is {k} but there are only {len(pool)} items to choose from")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return np.sort(rng.choice(pool, size=k, replace=False)).astype(np.int64)
    if strategy == "stratified":
        return _stratified(pool, k, labels, n, rng)
    xn = _normalize_rows(x[pool])
    if strategy == "farthest":
        chosen = [int(rng.integers(len(pool)))]
        dist = 1.0 - xn @ xn[chosen[0]]
        for _ in range(k - 1):
            dist[chosen] = -np.inf
            nxt = int(np.argmax(dist))
            chosen.append(nxt)
            dist = np.minimum(dist, 1.0 - xn @ xn[nxt])
        return pool[np.asarray(chosen)].astype(np.int64)
    # kmeans: FAISS k-means (fast), then the nearest distinct item to each centroid
    import faiss

    km = faiss.Kmeans(xn.shape[1], k, niter=20, seed=int(seed) + 1, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=100_000)
    km.train(xn)
    sims = km.centroids @ xn.T  # (k, n)
    order = np.argsort(-sims, axis=1)
    taken: set[int] = set()
    chosen = []
    for c in np.argsort(-sims.max(axis=1)):  # most confident centroids pick first
        for j in order[c]:
            if int(j) not in taken:
                taken.add(int(j))
                chosen.append(int(j))
                break
    return pool[np.asarray(chosen)].astype(np.int64)


def _stratified(pool: np.ndarray, k: int, labels, n: int, rng) -> np.ndarray:
    if labels is None:
        raise InputError("strategy 'stratified' needs labels (a label per item), but labels is None")
    labels = np.asarray(labels)
    if len(labels) != n:
        raise InputError(f"labels has {len(labels)} entries but there are {n} items")
    lab = labels[pool].astype(str)
    groups = {c: rng.permutation(pool[lab == c]) for c in np.unique(lab)}
    per = k // len(groups)
    chosen = [g[:per] for g in groups.values()]
    rest = np.concatenate([g[per:] for g in groups.values()])
    extra = rng.choice(rest, size=k - per * len(groups), replace=False) if k > per * len(groups) else []
    out = np.concatenate(chosen + [np.asarray(extra, dtype=np.int64)])
    if len(out) < k:  # some labels had fewer than `per` items
        left = np.setdiff1d(pool, out)
        out = np.concatenate([out, rng.choice(left, size=k - len(out), replace=False)])
    return np.sort(out).astype(np.int64)


# ---------------------------------------------------------------------------------------
# Relative projection


def relative_projection(x, anchors, *, mode: str = "cosine", output_norm: str = "none") -> np.ndarray:
    """Relative representation of x (N, D) with respect to anchor vectors (k, D) of the same space.

    mode "cosine": r(x)_j = cos(x, a_j) — both sides L2-normalised, then an inner product.
    mode "centred": the same after subtracting the anchors' mean from both sides (helps when a
                    space's vectors share a common direction, as contrastive embeddings often do).
    mode "basis":  change of basis, the coefficients c solving anchorsᵀ c = x (least squares).
    output_norm: "none"; "l2" (each row to unit length); "standard" (each anchor column to zero
    mean, unit variance over the batch, like BatchNorm); "layernorm" (each row to zero mean,
    unit variance). Returns float32 (N, k).
    """
    x = as_matrix(x, what="x")
    a = as_matrix(anchors, what="anchors")
    if len(a) < 2:
        raise InputError(f"anchors: at least 2 anchors are needed, but {len(a)} were given")
    if a.shape[1] != x.shape[1]:
        raise InputError(f"anchors have {a.shape[1]} dimensions but x has {x.shape[1]}; anchors must be "
                         "embedded by the same model as the items")
    if mode not in PROJECTIONS:
        raise InputError(f"Unknown relative projection: {mode!r}. Must be one of: {', '.join(PROJECTIONS)}")
    if output_norm not in OUTPUT_NORMS:
        raise InputError(f"Unknown output normalisation: {output_norm!r}. Must be one of: {', '.join(OUTPUT_NORMS)}")
    if mode in ("cosine", "centred"):
        if mode == "centred":
            mu = a.mean(0, keepdims=True)
            x, a = x - mu, a - mu
        r = _normalize_rows(x) @ _normalize_rows(a).T
    else:
        coef, *_ = np.linalg.lstsq(a.T.astype(np.float64), x.T.astype(np.float64), rcond=None)
        r = coef.T.astype(np.float32)
    return normalize_output(r, output_norm)


def normalize_output(r: np.ndarray, how: str) -> np.ndarray:
    if how == "none":
        return np.ascontiguousarray(r, dtype=np.float32)
    if how == "l2":
        return _normalize_rows(r)
    if how == "standard":
        return ((r - r.mean(0)) / (r.std(0) + 1e-6)).astype(np.float32)
    if how == "layernorm":
        return ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).astype(np.float32)
    raise InputError(f"Unknown output normalisation: {how!r}. Must be one of: {', '.join(OUTPUT_NORMS)}")


@dataclass
class RelativeProjector:
    """Anchors fixed once (as vectors of one space), applied to any batch of that space.

    The sklearn contract: parameters in __init__, `fit(x, anchor_idx)` stores `anchors_`.
    """

    mode: str = "cosine"
    output_norm: str = "none"

    def fit(self, x, anchor_idx) -> RelativeProjector:
        x = as_matrix(x, what="x")
        idx = check_anchor_indices(anchor_idx, len(x))
        self.anchor_idx_ = idx
        self.anchors_ = x[idx].copy()
        return self

    def transform(self, x) -> np.ndarray:
        return relative_projection(x, self.anchors_, mode=self.mode, output_norm=self.output_norm)


# ---------------------------------------------------------------------------------------
# Similarity of two spaces (the same items embedded twice)


def knn_indices(x, k: int, *, queries=None, metric: str = "cosine") -> np.ndarray:
    """(M, k) int64 indices of the k nearest items of x (N, D) to each query (default: x itself,
    in which case each item is its own first neighbour). Exact search."""
    from backends.corpora.index import VectorIndex

    x = as_matrix(x, what="x")
    q = x if queries is None else as_matrix(queries, what="queries")
    k = _check_k(k, len(x))
    _, idx = VectorIndex(x, metric=metric, kind="flat").search(q, k)
    return idx.astype(np.int64)


def _check_k(k, n: int) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise InputError(f"k must be a whole number, but is {k!r}") from None
    if not 1 <= k < n:
        raise InputError(f"k must be between 1 and {n - 1} (fewer than the number of items), but is {k}")
    return k


def jaccard_at_k(x_a, x_b, k: int = 10) -> float:
    """Cross-space neighbourhood agreement, as in the paper's word-embedding table.

    For item i: S = the k items of B nearest (cosine) to A's vector of i, T = the k items of B
    nearest to B's own vector of i; Jaccard = |S ∩ T| / |S ∪ T|, averaged over items. It is 1
    when A and B agree up to a similarity-preserving map and ~0 for unrelated coordinates.
    Needs the same dimensionality (two relative spaces with the same anchors); NaN otherwise.
    """
    x_a, x_b = as_matrix(x_a, what="x_a"), as_matrix(x_b, what="x_b")
    check_parallel(x_a, x_b)
    if not _same_dim(x_a, x_b):
        return float("nan")
    cross = knn_indices(x_b, k, queries=x_a)
    own = knn_indices(x_b, k)
    return float(np.mean(jaccard_per_item(cross, own)))


def knn_overlap(x_a, x_b, k: int = 10) -> float:
    """Within-space neighbourhood agreement: Jaccard of item i's k nearest neighbours found in A
    and found in B (itself excluded). Invariant to any isometry of either space, defined for any
    two dimensionalities."""
    x_a, x_b = as_matrix(x_a, what="x_a"), as_matrix(x_b, what="x_b")
    check_parallel(x_a, x_b)
    na, nb = knn_indices(x_a, k + 1)[:, 1:], knn_indices(x_b, k + 1)[:, 1:]
    return float(np.mean(jaccard_per_item(na, nb)))


def jaccard_per_item(na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    k = na.shape[1]
    hits = (na[:, :, None] == nb[:, None, :]).any(2).sum(1).astype(np.float64)
    return hits / (2 * k - hits)


def _same_dim(x_a: np.ndarray, x_b: np.ndarray) -> bool:
    return x_a.shape[1] == x_b.shape[1]


def mrr(x_a, x_b, *, chunk: int = 2048) -> float:
    """Mean reciprocal rank of item i of space B among all of B's items, ranked by cosine to item i of A.

    Cross-space similarity needs the same dimensionality (true for two relative spaces with the
    same anchors); returns NaN when the dimensions differ.
    """
    x_a, x_b = as_matrix(x_a, what="x_a"), as_matrix(x_b, what="x_b")
    check_parallel(x_a, x_b)
    if not _same_dim(x_a, x_b):
        return float("nan")
    a, b = _normalize_rows(x_a), _normalize_rows(x_b)
    rr = np.empty(len(a))
    for s in range(0, len(a), chunk):
        sims = a[s:s + chunk] @ b.T
        own = sims[np.arange(len(sims)), np.arange(s, s + len(sims))]
        rank = 1 + (sims > own[:, None]).sum(1)
        rr[s:s + len(sims)] = 1.0 / rank
    return float(rr.mean())


def mean_cosine(x_a, x_b) -> float:
    """Mean cosine similarity of item i in A with item i in B (NaN when the dimensions differ)."""
    x_a, x_b = as_matrix(x_a, what="x_a"), as_matrix(x_b, what="x_b")
    check_parallel(x_a, x_b)
    if not _same_dim(x_a, x_b):
        return float("nan")
    return float(np.mean(np.sum(_normalize_rows(x_a) * _normalize_rows(x_b), axis=1)))


def linear_cka(x_a, x_b) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019): invariant to rotation and isotropic scale."""
    x_a, x_b = as_matrix(x_a, what="x_a"), as_matrix(x_b, what="x_b")
    check_parallel(x_a, x_b)
    a = x_a.astype(np.float64) - x_a.mean(0)
    b = x_b.astype(np.float64) - x_b.mean(0)
    hsic = np.linalg.norm(b.T @ a) ** 2
    denom = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(hsic / denom) if denom > 0 else float("nan")


def similarity_metrics(x_a, x_b, *, k: int = 10) -> dict[str, float]:
    """Jaccard@k, MRR, mean cosine, linear CKA and within-space kNN overlap of two parallel spaces."""
    return {"jaccard": jaccard_at_k(x_a, x_b, k), "mrr": mrr(x_a, x_b), "cosine": mean_cosine(x_a, x_b),
            "cka": linear_cka(x_a, x_b), "knn_overlap": knn_overlap(x_a, x_b, k)}


def compare(x_a, x_b, anchor_idx, *, k: int = 10, mode: str = "cosine", output_norm: str = "none") -> dict:
    """Absolute vs relative similarity of two spaces embedding the same items.

    Returns {"absolute": {...}, "relative": {...}, "procrustes": {...}} with the metrics of
    `similarity_metrics`; "procrustes" compares B with A mapped into B by a Procrustes translator
    fitted on the anchors only.
    """
    x_a, x_b = as_matrix(x_a, what="space A"), as_matrix(x_b, what="space B")
    check_parallel(x_a, x_b)
    idx = check_anchor_indices(anchor_idx, len(x_a))
    r_a = relative_projection(x_a, x_a[idx], mode=mode, output_norm=output_norm)
    r_b = relative_projection(x_b, x_b[idx], mode=mode, output_norm=output_norm)
    translated = Procrustes().fit(x_a[idx], x_b[idx]).transform(x_a)
    return {"absolute": similarity_metrics(x_a, x_b, k=k), "relative": similarity_metrics(r_a, r_b, k=k),
            "procrustes": similarity_metrics(translated, x_b, k=k)}


# ---------------------------------------------------------------------------------------
# Translator baseline


class Procrustes:
    """Orthogonal Procrustes translator from space X to space Y, fitted on paired items (anchors).

    Standard scaling first: each side is centred per dimension and divided by one overall scale
    (the root-mean-square norm of its centred rows), so a rotation stays a rotation. Spaces of
    different dimensionality are zero-padded to the larger one. R = U Vᵀ from the SVD of XᵀY
    minimises ||X R − Y||_F over orthogonal R.
    """

    def fit(self, x, y) -> Procrustes:
        x, y = as_matrix(x, what="source anchors"), as_matrix(y, what="target anchors")
        if len(x) != len(y):
            raise InputError(f"source has {len(x)} anchors but target has {len(y)}; Procrustes needs pairs")
        if len(x) < 2:
            raise InputError(f"Procrustes needs at least 2 anchor pairs, but {len(x)} were given")
        x, y = x.astype(np.float64), y.astype(np.float64)
        self.mean_x_, self.mean_y_ = x.mean(0), y.mean(0)
        self.scale_x_ = _rms_norm(x - self.mean_x_)
        self.scale_y_ = _rms_norm(y - self.mean_y_)
        self.dim_x_, self.dim_y_ = x.shape[1], y.shape[1]
        d = max(self.dim_x_, self.dim_y_)
        xs = _pad((x - self.mean_x_) / self.scale_x_, d)
        ys = _pad((y - self.mean_y_) / self.scale_y_, d)
        u, _, vt = np.linalg.svd(xs.T @ ys)
        self.rotation_ = u @ vt
        return self

    def transform(self, x) -> np.ndarray:
        x = as_matrix(x, what="x").astype(np.float64)
        if x.shape[1] != self.dim_x_:
            raise InputError(f"x has {x.shape[1]} dimensions but the translator was fitted on {self.dim_x_}")
        d = self.rotation_.shape[0]
        z = _pad((x - self.mean_x_) / self.scale_x_, d) @ self.rotation_
        return (z[:, : self.dim_y_] * self.scale_y_ + self.mean_y_).astype(np.float32)


def _rms_norm(x: np.ndarray) -> float:
    s = float(np.sqrt(np.mean(np.sum(x * x, axis=1))))
    return s if s > 0 else 1.0


def _pad(x: np.ndarray, d: int) -> np.ndarray:
    return x if x.shape[1] == d else np.pad(x, ((0, 0), (0, d - x.shape[1])))
