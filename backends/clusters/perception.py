"""Cluster perception: scatterplot tasks, agreement between annotators, algorithms vs people.

Tasks
    gaussian_mixture(...)      one synthetic bivariate plot with controlled point count, number
                               of clusters, separation, density contrast and background noise
    synthetic_task_specs(...)  a task set of such plots with parameters spread over ranges
    corpus_task_specs(...)     plots subsampled from a corpus's 2-D map

Agreement (ClusterNet / HPSCAN, ClustMe; Krippendorff)
    partition_labels(groups, n)     integer labels; noise and unassigned points are singletons
    pairwise_ari(partitions)        matrix of adjusted Rand indices and its off-diagonal mean
    krippendorff_alpha_comembership one binary judgement per pair of points ("same group?")
    pointwise_agreement(...)        per point: mean Jaccard of its group across annotator pairs

Algorithms vs people
    algorithm_partitions(xy, k)     k-means, DBSCAN, HDBSCAN, Gaussian mixture
    leaderboard(plots)              mean ARI of each algorithm with the annotators, next to the
                                    annotators' own leave-one-out agreement

Noise convention: a point marked "noise" or left unassigned belongs to no cluster, so it is its
own singleton in partitions and is "together" with no other point in co-membership.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from backends.clusters.annotations import NOISE, UNASSIGNED, PlotSpec
from backends.errors import InputError

MIN_POINTS, MAX_POINTS = 20, 1_000


# ---------------------------------------------------------------------------------------
# Synthetic tasks


@dataclass(frozen=True)
class MixtureParams:
    n_points: int = 200
    n_clusters: int = 3
    separation: float = 4.0  # minimum distance between cluster centres, in units of cluster std
    density_ratio: float = 1.0  # densest / sparsest cluster (point density: size and spread vary)
    noise_fraction: float = 0.0  # share of points drawn uniformly over the plot's box
    anisotropy: float = 1.0  # max ratio of a cluster's long to short axis
    seed: int = 0

    def validated(self) -> MixtureParams:
        if not MIN_POINTS <= int(self.n_points) <= MAX_POINTS:
            raise InputError(f"n_points must be between {MIN_POINTS} and {MAX_POINTS}, but is {self.n_points}")
        if not 1 <= int(self.n_clusters) <= 12:
            raise InputError(f"n_clusters must be between 1 and 12, but is {self.n_clusters}")
        if not 0.0 <= float(self.separation) <= 50.0:
            raise InputError(f"separation must be between 0 and 50 (cluster std units), but is {self.separation}")
        if not 1.0 <= float(self.density_ratio) <= 50.0:
            raise InputError(f"density_ratio must be between 1 and 50, but is {self.density_ratio}")
        if not 0.0 <= float(self.noise_fraction) <= 0.9:
            raise InputError(f"noise_fraction must be between 0 and 0.9, but is {self.noise_fraction}")
        if not 1.0 <= float(self.anisotropy) <= 10.0:
            raise InputError(f"anisotropy must be between 1 and 10, but is {self.anisotropy}")
        return self


def gaussian_mixture(params: MixtureParams = MixtureParams()) -> tuple[np.ndarray, np.ndarray]:
    """xy (N, 2) float32 scaled into [-1, 1], truth (N,) int (cluster index, -1 for noise).

    Centres are placed by rejection sampling so every pair is at least `separation` standard
    deviations apart (a unit std before scaling). Cluster k gets weight w_k and std s_k chosen
    so that point densities w_k / s_k² span `density_ratio` from sparsest to densest.
    """
    p = params.validated()
    rng = np.random.default_rng(int(p.seed))
    k, n = int(p.n_clusters), int(p.n_points)
    n_noise = int(round(n * float(p.noise_fraction)))
    n_clu = n - n_noise

    # 1. densities: log-uniform between 1 and density_ratio; half via weight, half via spread
    dens = np.exp(rng.uniform(0, np.log(p.density_ratio), size=k)) if k > 1 else np.ones(1)
    if k > 1 and p.density_ratio > 1:
        dens[rng.permutation(k)[:2]] = [1.0, p.density_ratio]  # make the ratio exact
    weights = np.sqrt(dens) / np.sqrt(dens).sum()
    stds = 1.0 / np.sqrt(np.sqrt(dens))  # w/s² ∝ sqrt(d) · sqrt(d) = d
    sizes = np.maximum(1, np.floor(weights * n_clu).astype(int))
    sizes[np.argmax(sizes)] += n_clu - sizes.sum()

    # 2. centres at least `separation` (in units of the two clusters' mean std) apart
    centres = np.zeros((k, 2))
    box = max(2.0, p.separation * np.sqrt(k) * 1.2)
    for i in range(1, k):
        for _attempt in range(2_000):
            c = rng.uniform(-box, box, size=2)
            need = p.separation * (stds[:i] + stds[i]) / 2
            if np.all(np.linalg.norm(centres[:i] - c, axis=1) >= need):
                break
            box *= 1.002
        centres[i] = c

    # 3. points: an anisotropic Gaussian per cluster, random orientation
    pts, truth = [], []
    for i in range(k):
        ratio = rng.uniform(1.0, p.anisotropy)
        axes = stds[i] * np.array([np.sqrt(ratio), 1 / np.sqrt(ratio)])
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts.append(centres[i] + (rng.normal(size=(sizes[i], 2)) * axes) @ rot.T)
        truth.append(np.full(sizes[i], i))
    xy = np.concatenate(pts)
    if n_noise:
        lo, hi = xy.min(0) - 1, xy.max(0) + 1
        xy = np.concatenate([xy, rng.uniform(lo, hi, size=(n_noise, 2))])
        truth.append(np.full(n_noise, -1))
    truth = np.concatenate(truth)
    order = rng.permutation(n)  # point ids carry no information about the cluster
    xy, truth = xy[order], truth[order]
    xy = xy - (xy.max(0) + xy.min(0)) / 2
    xy = xy / (np.abs(xy).max() or 1.0)
    return xy.astype(np.float32), truth.astype(int)


def synthetic_task_specs(n_plots: int, *, seed: int = 0, points=(100, 300), clusters=(1, 5),
                         separation=(1.5, 8.0), density_ratio=(1.0, 4.0), noise_fraction=(0.0, 0.1),
                         anisotropy=(1.0, 3.0)) -> list[PlotSpec]:
    """n_plots Gaussian-mixture plots with parameters drawn uniformly from the given (lo, hi) ranges."""
    if not 1 <= int(n_plots) <= 1_000:
        raise InputError(f"n_plots must be between 1 and 1000, but is {n_plots}")
    rng = np.random.default_rng(int(seed))
    specs = []
    for _ in range(int(n_plots)):
        mp = MixtureParams(
            n_points=int(rng.integers(int(points[0]), int(points[1]) + 1)),
            n_clusters=int(rng.integers(int(clusters[0]), int(clusters[1]) + 1)),
            separation=float(rng.uniform(*separation)),
            density_ratio=float(rng.uniform(*density_ratio)),
            noise_fraction=float(rng.uniform(*noise_fraction)),
            anisotropy=float(rng.uniform(*anisotropy)),
            seed=int(rng.integers(0, 2**31 - 1)),
        ).validated()
        xy, truth = gaussian_mixture(mp)
        specs.append(PlotSpec(xy, truth=truth.tolist(), meta={"generator": "gaussian_mixture", **mp.__dict__}))
    return specs


def corpus_task_specs(xy: np.ndarray, ids, n_plots: int, *, points: int = 200, seed: int = 0,
                      labels=None, window: float = 1.0, corpus: str = "") -> list[PlotSpec]:
    """Plots subsampled from a corpus's 2-D map.

    window < 1 zooms: each plot takes points near a random anchor (the nearest `points / window`
    items), then subsamples `points` of them, so local structure is shown rather than the whole map.
    labels (optional, one per item) are kept as ground truth codes.
    """
    xy = np.asarray(xy, dtype=np.float32)
    n = len(xy)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"xy must be (N, 2), but is {xy.shape}")
    if not MIN_POINTS <= int(points) <= MAX_POINTS:
        raise InputError(f"points must be between {MIN_POINTS} and {MAX_POINTS}, but is {points}")
    if n < MIN_POINTS:
        raise InputError(f"the map has {n} points; a plot needs at least {MIN_POINTS}")
    if not 0.05 <= float(window) <= 1.0:
        raise InputError(f"window must be between 0.05 and 1, but is {window}")
    if not 1 <= int(n_plots) <= 1_000:
        raise InputError(f"n_plots must be between 1 and 1000, but is {n_plots}")
    ids = [str(i) for i in ids]
    codes = None
    if labels is not None:
        _, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    rng = np.random.default_rng(int(seed))
    m = min(int(points), n)
    specs = []
    for _ in range(int(n_plots)):
        if window < 1.0:
            pool_size = min(n, max(m, int(round(m / window))))
            anchor = xy[rng.integers(n)]
            pool = np.argsort(np.linalg.norm(xy - anchor, axis=1))[:pool_size]
        else:
            pool = np.arange(n)
        take = np.sort(rng.choice(pool, size=m, replace=False))
        sub = xy[take]
        sub = sub - (sub.max(0) + sub.min(0)) / 2
        sub = sub / (np.abs(sub).max() or 1.0)
        specs.append(PlotSpec(sub, source_ids=[ids[i] for i in take],
                              truth=codes[take].tolist() if codes is not None else None,
                              meta={"generator": "corpus", "corpus": corpus, "window": float(window)}))
    return specs


# ---------------------------------------------------------------------------------------
# Agreement


def partition_labels(groups: dict[str, list[int]], n_points: int) -> np.ndarray:
    """Integer labels: cluster k → k-1; noise and unassigned points → distinct singleton labels."""
    labels = np.full(n_points, -1, dtype=int)
    for name, ids in groups.items():
        if name in (NOISE, UNASSIGNED):
            continue
        labels[np.asarray(ids, dtype=int)] = int(name.split()[-1]) - 1
    lone = labels < 0
    labels[lone] = 1_000 + np.arange(int(lone.sum()))
    return labels


def n_clusters_of(groups: dict[str, list[int]]) -> int:
    return sum(1 for g, ids in groups.items() if g not in (NOISE, UNASSIGNED) and len(ids) > 0)


def pairwise_ari(partitions: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(A, A) matrix of adjusted Rand indices between annotators' partitions; mean off-diagonal
    (nan with fewer than two partitions)."""
    from sklearn.metrics import adjusted_rand_score

    a = len(partitions)
    m = np.ones((a, a))
    for i in range(a):
        for j in range(i + 1, a):
            m[i, j] = m[j, i] = adjusted_rand_score(partitions[i], partitions[j])
    mean = float(m[np.triu_indices(a, 1)].mean()) if a > 1 else float("nan")
    return m, mean


def comembership(labels: np.ndarray) -> np.ndarray:
    """(N, N) bool: i and j are in the same cluster (the diagonal is True)."""
    labels = np.asarray(labels)
    return labels[:, None] == labels[None, :]


def krippendorff_alpha_comembership(partitions: list[np.ndarray]) -> float:
    """Krippendorff's α, nominal, where each unordered pair of points is a unit and each annotator
    answers "same group?" (1) or not (0). All annotators rate all pairs (no missing values).

    With coincidences o_01 = Σ_u n0_u·n1_u/(m−1) and value totals n_0, n_1 over n = m·U values:
    α = 1 − (n − 1) · o_01 / (n_0 · n_1). Identical partitions give 1; independent ones ≈ 0.
    Returns nan with fewer than two annotators or when no pair varies (α is undefined).
    """
    m = len(partitions)
    if m < 2:
        return float("nan")
    n_pts = len(partitions[0])
    iu = np.triu_indices(n_pts, 1)
    ones = np.zeros(len(iu[0]), dtype=np.int64)
    for lab in partitions:
        lab = np.asarray(lab)
        ones += (lab[iu[0]] == lab[iu[1]])
    zeros = m - ones
    o01 = float((ones * zeros).sum()) / (m - 1)
    n1, n0 = float(ones.sum()), float(zeros.sum())
    n = n1 + n0
    if n0 == 0 or n1 == 0:
        return float("nan")
    return 1.0 - (n - 1) * o01 / (n0 * n1)


def pointwise_agreement(partitions: list[np.ndarray]) -> np.ndarray:
    """(N,) in [0, 1]: for each point, the Jaccard index of its group (itself included) between
    two annotators, averaged over annotator pairs. 1: everyone put it with the same points."""
    a = len(partitions)
    n = len(partitions[0]) if a else 0
    if a < 2:
        return np.full(n, np.nan)
    cms = [comembership(p) for p in partitions]
    total = np.zeros(n)
    pairs = 0
    for i in range(a):
        for j in range(i + 1, a):
            inter = (cms[i] & cms[j]).sum(1)
            union = (cms[i] | cms[j]).sum(1)
            total += inter / union
            pairs += 1
    return total / pairs


def plot_agreement(groups_list: list[dict[str, list[int]]], n_points: int) -> dict:
    """Agreement summary of one plot's answers."""
    parts = [partition_labels(g, n_points) for g in groups_list]
    _, ari = pairwise_ari(parts) if len(parts) > 1 else (None, float("nan"))
    ks = [n_clusters_of(g) for g in groups_list]
    return {"annotators": len(parts), "mean_pairwise_ari": ari,
            "alpha_comembership": krippendorff_alpha_comembership(parts),
            "clusters_median": float(np.median(ks)) if ks else float("nan"),
            "clusters_min": min(ks) if ks else None, "clusters_max": max(ks) if ks else None}


# ---------------------------------------------------------------------------------------
# Algorithms vs annotators

ALGORITHMS = ("k-means", "DBSCAN", "HDBSCAN", "Gaussian mixture")


_ALGO_CACHE: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
_ALGO_CACHE_SIZE = 1_024
_ALGO_LOCK = threading.Lock()


def algorithm_partitions(xy: np.ndarray, k: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Cached by the plot's coordinates, k and seed (plots are immutable; the leaderboard is
    recomputed as answers arrive)."""
    x = np.ascontiguousarray(xy, dtype=np.float64)
    key = (hashlib.sha1(x.tobytes()).hexdigest(), x.shape, int(k), int(seed))
    with _ALGO_LOCK:
        if key in _ALGO_CACHE:
            _ALGO_CACHE.move_to_end(key)
            return _ALGO_CACHE[key]
    out = _algorithm_partitions(x, k, seed=seed)
    with _ALGO_LOCK:
        _ALGO_CACHE[key] = out
        while len(_ALGO_CACHE) > _ALGO_CACHE_SIZE:
            _ALGO_CACHE.popitem(last=False)
    return out


def _algorithm_partitions(xy: np.ndarray, k: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Labels of each algorithm on one plot; noise (−1) becomes singletons, as for people.

    k-means gets k (the annotators' median number of clusters: an oracle people gave it);
    the Gaussian mixture picks its k by BIC from 1…8; DBSCAN uses min_samples = 5 and eps at the
    90th percentile of 5th-neighbour distances; HDBSCAN min_cluster_size = max(5, N/40).
    """
    from sklearn.cluster import DBSCAN, HDBSCAN, KMeans
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(xy, dtype=np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    n = len(x)
    k = int(max(1, min(k, n - 1)))
    out: dict[str, np.ndarray] = {}
    out["k-means"] = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x)
    ms = min(5, n - 1)
    d, _ = NearestNeighbors(n_neighbors=ms + 1).fit(x).kneighbors(x)
    eps = float(np.percentile(d[:, -1], 90)) or 1e-3
    out["DBSCAN"] = DBSCAN(eps=eps, min_samples=ms).fit_predict(x)
    out["HDBSCAN"] = HDBSCAN(min_cluster_size=max(5, n // 40), copy=True).fit_predict(x)
    best, best_bic = None, np.inf
    for kk in range(1, min(8, n - 1) + 1):
        gm = GaussianMixture(n_components=kk, random_state=seed, n_init=1).fit(x)
        bic = gm.bic(x)
        if bic < best_bic:
            best, best_bic = gm, bic
    out["Gaussian mixture"] = best.predict(x)
    return {name: _noise_to_singletons(lab) for name, lab in out.items()}


def _noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).astype(int).copy()
    lone = labels < 0
    labels[lone] = 1_000_000 + np.arange(int(lone.sum()))
    return labels


TRUTH = "generator truth"


def leaderboard(plots: list[tuple]) -> pandas.DataFrame:  # noqa: F821
    """plots: (xy, [groups of each annotator]) or (xy, groups, truth). One row per method, best first.

    Columns: method, mean_ari (vs each annotator, averaged over annotators then plots), plots.
    The "annotators (leave-one-out)" row is each annotator vs the others: the ceiling an
    algorithm can reasonably reach. With truth (synthetic plots: the mixture component of each
    point, −1 for background noise), a "generator truth" row says how far what people see is
    from how the data was made. Plots with no answers are ignored.
    """
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    scores: dict[str, list[float]] = {m: [] for m in ALGORITHMS}
    scores[TRUTH] = []
    human: list[float] = []
    for item in plots:
        xy, groups_list = item[0], item[1]
        truth = item[2] if len(item) > 2 else None
        if not groups_list:
            continue
        n = len(xy)
        parts = [partition_labels(g, n) for g in groups_list]
        k = int(round(np.median([max(1, n_clusters_of(g)) for g in groups_list])))
        methods = dict(algorithm_partitions(xy, k))
        if truth is not None:
            methods[TRUTH] = _noise_to_singletons(np.asarray(truth))
        for name, lab in methods.items():
            scores[name].append(float(np.mean([adjusted_rand_score(p, lab) for p in parts])))
        if len(parts) > 1:
            human.append(float(np.mean([np.mean([adjusted_rand_score(parts[i], parts[j])
                                                 for j in range(len(parts)) if j != i]) for i in range(len(parts))])))
    rows = [{"method": m, "mean_ari": float(np.mean(v)) if v else float("nan"), "plots": len(v)}
            for m, v in scores.items() if v or m != TRUTH]
    rows.append({"method": "annotators (leave-one-out)", "mean_ari": float(np.mean(human)) if human else float("nan"),
                 "plots": len(human)})
    df = pd.DataFrame(rows).sort_values("mean_ari", ascending=False, na_position="last").reset_index(drop=True)
    df["mean_ari"] = df["mean_ari"].round(3)
    return df
