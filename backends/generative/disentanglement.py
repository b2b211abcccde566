"""Disentanglement scores of a set of latents (directions' coordinates) against known discrete factors.

    s = scores(z, factors)   # {"mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                             #  "infom", "infoe", "infoc"}, each in [0, 1], higher is better

z is (N, L) float (one column per latent, e.g. each sample's coordinate along a direction),
factors is (N, F) discrete labels (strings are fine: each column is encoded as integer codes; a
DataFrame keeps its column names). Factors with a single value carry no information and are left
out of every average. Pure numpy / scikit-learn, deterministic for a given ``seed``.

Shared pieces
-------------
* Latents are discretised into ``bins`` = 20 equal-width bins each (Chen et al. 2018; Locatello et
  al. 2019's disentanglement_lib), for the mutual-information scores only.
* I(z_j; v_k) is the plug-in mutual information (nats) of the discretised latent and the factor;
  H(v_k) the factor's entropy. NMI_jk = I(z_j; v_k) / H(v_k) ∈ [0, 1].
  The plug-in estimate is biased upwards on few samples, by about (bins − 1)(|v_k| − 1) / (2N)
  nats: a latent independent of the factors reads NMI ≈ 0.1–0.2 on 200 samples (≈ 0 on thousands).
* DCI and InfoE fit predictors on a random 2/3 of the samples (``seed``) and test on the rest.

MIG (Chen et al., "Isolating Sources of Disentanglement in VAEs", NeurIPS 2018)
    MIG = 1/K Σ_k (NMI_{j(1),k} − NMI_{j(2),k}),  j(1), j(2) the latents with the largest and second
    largest NMI with factor k (with one latent, the second is 0).

DCI (Eastwood & Williams, "A Framework for the Quantitative Evaluation of Disentangled
Representations", ICLR 2018)
    For each factor k a scikit-learn ``GradientBoostingClassifier`` (50 trees of depth 3, as in
    disentanglement_lib but fewer trees) predicts v_k from all latents; its impurity-based feature
    importances give the column R_·k of the importance matrix R (L × K; each column sums to 1).
    P_jk = R_jk / Σ_k' R_jk',  D_j = 1 − H_K(P_j·)   (entropy in base K),
    ρ_j = Σ_k R_jk / Σ_jk R_jk,  disentanglement = Σ_j ρ_j D_j;
    P̃_jk = R_jk / Σ_j' R_j'k,   completeness = 1/K Σ_k (1 − H_L(P̃_·k))   (entropy in base L);
    informativeness = 1/K Σ_k test accuracy of the k-th classifier (chance: the share of the
    commonest value). With one factor D = 1; with one latent C = 1.

InfoMEC (Hsu, Dorrell, Whittington, Wu & Finn, "Disentanglement via Latent Quantization",
NeurIPS 2023, section 5)
    Over the active latents A (those that are not constant), with K factors and |A| latents:
    InfoM = 1/|A| Σ_{j∈A} (max_k NMI_jk / Σ_k NMI_jk − 1/K) / (1 − 1/K)        (modularity)
    InfoC = 1/K Σ_k (max_{j∈A} NMI_jk / Σ_{j∈A} NMI_jk − 1/|A|) / (1 − 1/|A|)   (compactness)
    InfoE = 1/K Σ_k max(0, (H(v_k) − CE_k) / H(v_k))                            (explicitness)
    where CE_k is the test cross-entropy (nats) of a multinomial logistic regression (scikit-learn
    ``LogisticRegression``, C = 1, standardised latents) predicting v_k from all latents: the share of
    the factor's entropy a linear readout recovers. A latent (factor) with no information at all
    counts 0 in InfoM (InfoC); with one factor InfoM = 1, with one active latent InfoC = 1.
"""
from __future__ import annotations

import numpy as np

from backends.errors import InputError

MIN_SAMPLES = 8
BINS = 20
NAMES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "infom", "infoe", "infoc")


# ---------------------------------------------------------------------------------------
# inputs

def _check(z, factors) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(z float64 (N, L), factor codes int (N, K) of the informative factors, their names)."""
    try:
        z = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("z has to be an (N, L) array of numbers") from None
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[1] < 1:
        raise InputError(f"z has to be an (N, L) array with at least one latent, but has shape {z.shape}")
    if not np.isfinite(z).all():
        raise InputError(f"z has {int((~np.isfinite(z)).sum())} NaN or infinite values")
    names = [str(c) for c in factors.columns] if hasattr(factors, "columns") else None
    f = np.asarray(factors.to_numpy() if hasattr(factors, "to_numpy") else factors, dtype=object)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2:
        raise InputError(f"factors have to be an (N, F) table of labels, but have shape {f.shape}")
    names = names or [f"factor {i + 1}" for i in range(f.shape[1])]
    if len(f) != len(z):
        raise InputError(f"z has {len(z)} samples but factors have {len(f)}")
    if len(z) < MIN_SAMPLES:
        raise InputError(f"at least {MIN_SAMPLES} samples are needed to score disentanglement, but there are {len(z)}")
    codes, kept = [], []
    for i in range(f.shape[1]):
        col = f[:, i]
        missing = [v is None or (isinstance(v, float) and not np.isfinite(v)) for v in col]
        if any(missing):
            raise InputError(f"factor {names[i]!r} has {sum(missing)} missing (None or NaN) labels")
        _, c = np.unique(col.astype(str), return_inverse=True)
        if c.max() > 0:  # a single value carries no information
            codes.append(c)
            kept.append(names[i])
    if not codes:
        raise InputError("every factor has a single value: there is nothing to be disentangled")
    return z, np.stack(codes, 1), kept


def discretize(z: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(N, L) float -> (N, L) int bin indices, `bins` equal-width bins per latent."""
    out = np.zeros(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        lo, hi = float(z[:, j].min()), float(z[:, j].max())
        if hi > lo:
            out[:, j] = np.clip(((z[:, j] - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
    return out


def _entropy(codes: np.ndarray) -> float:
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mi(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer code arrays."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(max(0.0, (joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum()))


def nmi_matrix(z, factors, bins: int = BINS) -> np.ndarray:
    """(L, K) I(z_j; v_k) / H(v_k) of the discretised latents and the (informative) factors."""
    z, v, _ = _check(z, factors)
    return _nmi(discretize(z, bins), v)


def _nmi(zd: np.ndarray, v: np.ndarray) -> np.ndarray:
    m = np.zeros((zd.shape[1], v.shape[1]))
    for k in range(v.shape[1]):
        h = _entropy(v[:, k])
        for j in range(zd.shape[1]):
            m[j, k] = _mi(zd[:, j], v[:, k]) / h
    return np.clip(m, 0.0, 1.0)


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    cut = max(1, min(n - 1, int(round(n * 2 / 3))))
    return idx[:cut], idx[cut:]


# ---------------------------------------------------------------------------------------
# the scores

def mig(z, factors, bins: int = BINS) -> float:
    """Mutual information gap (Chen et al. 2018), in [0, 1]."""
    z, v, _ = _check(z, factors)
    return _mig(_nmi(discretize(z, bins), v))


def _mig(m: np.ndarray) -> float:
    s = -np.sort(-m, axis=0)
    second = s[1] if len(s) > 1 else np.zeros(m.shape[1])
    return float(np.mean(s[0] - second))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of each row of p (rows sum to 1) in base `base`."""
    q = np.where(p > 0, p, 1.0)
    return -(p * np.log(q)).sum(1) / np.log(base)


def importance_matrix(z, factors, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(R (L, K) feature importances of per-factor gradient-boosted trees, test accuracy (K,))."""
    z, v, _ = _check(z, factors)
    return _importance(z, v, seed)


def _importance(z: np.ndarray, v: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.ensemble import GradientBoostingClassifier

    tr, te = _split(len(z), seed)
    R = np.zeros((z.shape[1], v.shape[1]))
    acc = np.zeros(v.shape[1])
    for k in range(v.shape[1]):
        y = v[:, k]
        if len(np.unique(y[tr])) < 2:  # the training split happens to hold one value: predict it
            acc[k] = float(np.mean(y[te] == y[tr][0]))
            continue
        model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=seed).fit(z[tr], y[tr])
        R[:, k] = np.abs(model.feature_importances_)
        acc[k] = float(model.score(z[te], y[te]))
    return R, acc


def dci(z, factors, seed: int = 0) -> dict:
    """{"disentanglement", "completeness", "informativeness"} (Eastwood & Williams 2018), in [0, 1]."""
    z, v, _ = _check(z, factors)
    return _dci(*_importance(z, v, seed))


def _dci(R: np.ndarray, acc: np.ndarray) -> dict:
    L, K = R.shape
    total = R.sum()
    if total <= 0:
        return {"disentanglement": 0.0, "completeness": 0.0, "informativeness": float(acc.mean())}
    row = R.sum(1)
    if K > 1:
        P = R / np.where(row > 0, row, 1.0)[:, None]
        Dj = np.where(row > 0, 1.0 - _entropy_rows(P, K), 0.0)
        d = float((row / total * Dj).sum())
    else:
        d = 1.0
    col = R.sum(0)
    if L > 1:
        Pc = (R / np.where(col > 0, col, 1.0)[None]).T
        Ck = np.where(col > 0, 1.0 - _entropy_rows(Pc, L), 0.0)
        c = float(Ck.mean())
    else:
        c = 1.0
    return {"disentanglement": float(np.clip(d, 0, 1)), "completeness": float(np.clip(c, 0, 1)),
            "informativeness": float(acc.mean())}


def _ratio_score(m: np.ndarray) -> float:
    """mean over rows of (max / sum − 1/n) / (1 − 1/n), n the row length; a zero row scores 0."""
    n = m.shape[1]
    if n == 1:
        return 1.0
    s = m.sum(1)
    r = np.where(s > 0, m.max(1) / np.where(s > 0, s, 1.0), 1.0 / n)
    return float(np.mean(np.clip((r - 1.0 / n) / (1.0 - 1.0 / n), 0, 1)))


def _explicitness(z: np.ndarray, v: np.ndarray, seed: int) -> float:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    tr, te = _split(len(z), seed)
    mu, sd = z[tr].mean(0), z[tr].std(0)
    zs = (z - mu) / np.where(sd > 0, sd, 1.0)
    out = []
    for k in range(v.shape[1]):
        y = v[:, k]
        h = _entropy(y)
        classes = np.unique(y[tr])
        if len(classes) < 2:
            out.append(0.0)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=1.0, max_iter=500).fit(zs[tr], y[tr])
        p = np.full((len(te), y.max() + 1), 1e-12)
        p[:, model.classes_] = np.maximum(model.predict_proba(zs[te]), 1e-12)
        ce = float(-np.mean(np.log(p[np.arange(len(te)), y[te]] / p.sum(1))))
        out.append(max(0.0, (h - ce) / h))
    return float(np.mean(out))


def infomec(z, factors, seed: int = 0, bins: int = BINS) -> dict:
    """{"infom", "infoe", "infoc"} (Hsu et al. 2023), in [0, 1]."""
    z, v, _ = _check(z, factors)
    return _infomec(z, v, _nmi(discretize(z, bins), v), seed)


def _infomec(z: np.ndarray, v: np.ndarray, m: np.ndarray, seed: int) -> dict:
    active = z.std(0) > 1e-12 * max(1.0, float(np.abs(z).max()))
    ma = m[active]
    if len(ma) == 0:
        return {"infom": 0.0, "infoe": 0.0, "infoc": 0.0}
    return {"infom": _ratio_score(ma), "infoe": _explicitness(z[:, active], v, seed),
            "infoc": _ratio_score(ma.T)}


def scores(z, factors, seed: int = 0, bins: int = BINS) -> dict:
    """All seven scores (NAMES) of latents z (N, L) against discrete factors (N, F), each in [0, 1]."""
    z, v, _ = _check(z, factors)
    m = _nmi(discretize(z, bins), v)
    d = _dci(*_importance(z, v, seed))
    i = _infomec(z, v, m, seed)
    return {"mig": _mig(m), "dci_disentanglement": d["disentanglement"], "dci_completeness": d["completeness"],
            "dci_informativeness": d["informativeness"], **i}
