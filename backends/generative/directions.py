"""Directions in h-space: where they come from, how strong a step is, what they change.

    bank = sample_bank(pipe, prompts, seeds=0, steps=10)   # h of N samples at every step
    dirs = pca_directions(bank, k=25)                        # unsupervised (Haas et al.)
    d = factor_direction(bank, "colour", "blue")             # supervised: mean(h+) − mean(h−)
    d = orthogonalize(d, [other])                            # conditional manipulation
    js = jacobian_directions(pipe, traj, step=3, k=3)        # image-specific (∂ε/∂h, JVP/VJP)
    t = text_direction(pipe, "a red shape", "a blue shape")  # shift of the text conditioning
    deltas = compose_deltas([d], [2.0], traj)                # Δh per step, strengths in σ
    img = hspace.edit(pipe, traj, deltas)
    report = judge_direction(pipe, d, sources, judge)        # factor change, disentanglement, name
    istd(frames)                                             # smoothness of a traversal

A Direction holds one unit vector per timestep (or one for all), the standard deviation σ of h
along it at that timestep (strengths are in units of σ), and a default strength.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.errors import InputError

KINDS = ("pca", "jacobian", "supervised", "prompt-pair", "groups", "text", "custom")
MAX_STRENGTH = 50.0  # in σ; larger edits only produce noise
DEFAULT_STRENGTH = 3.0
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------
# The direction object

@dataclass
class Direction:
    """A direction in h-space (or, kind "text", in the text conditioning).

    vectors: float32 (Td, D), unit rows (zero rows allowed: no edit at that timestep);
    timesteps: int (Td,) the scheduler timesteps they belong to (Td = 1: the same at every step);
    sigma: float32 (Td,) std of h along the vector there (strength 1 moves h by σ);
    h_shape: the shape of h it lives in, e.g. (64, 4, 4); for "text": (L + 1, text_dim).
    """

    id: str
    name: str
    kind: str
    vectors: np.ndarray
    timesteps: np.ndarray
    sigma: np.ndarray
    h_shape: tuple[int, ...]
    default_strength: float = DEFAULT_STRENGTH
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim == 1:
            self.vectors = self.vectors[None]
        self.timesteps = np.asarray(self.timesteps, dtype=np.int64).reshape(-1)
        self.sigma = np.asarray(self.sigma, dtype=np.float32).reshape(-1)
        self.h_shape = tuple(int(s) for s in self.h_shape)
        td, d = self.vectors.shape
        if len(self.timesteps) != td or len(self.sigma) != td:
            raise ValueError(f"direction {self.id!r}: {td} vectors, {len(self.timesteps)} timesteps, {len(self.sigma)} sigmas")
        if int(np.prod(self.h_shape)) != d:
            raise ValueError(f"direction {self.id!r}: vectors have {d} entries but h_shape {self.h_shape} has {int(np.prod(self.h_shape))}")
        if not (np.isfinite(self.vectors).all() and np.isfinite(self.sigma).all()):
            raise ValueError(f"direction {self.id!r}: vectors or sigma are not finite")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index_for(self, t: int) -> int:
        if len(self.timesteps) == 1:
            return 0
        return int(np.argmin(np.abs(self.timesteps - int(t))))

    def delta_at(self, t: int) -> np.ndarray:
        """Δh for strength 1 at timestep t: σ(t) v(t), flat (D,)."""
        j = self.index_for(t)
        return self.sigma[j] * self.vectors[j]

    def summary(self) -> dict:
        return {"id": self.id, "name": self.name, "kind": self.kind, "default_strength": round(float(self.default_strength), 3),
                "timesteps": len(self.timesteps), **{k: v for k, v in self.meta.items() if _jsonable(v)}}


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


def _unit(v: np.ndarray) -> tuple[np.ndarray, float]:
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else np.zeros_like(v)), n


# ---------------------------------------------------------------------------------------
# A bank of samples: h at every step for N generated images

@dataclass
class HBank:
    """h of N samples at every step: h (N, T, D) float32, with their prompts, seeds, images."""

    h: np.ndarray
    h_shape: tuple[int, ...]
    timesteps: np.ndarray
    prompts: list[str]
    seeds: list[int]
    images: np.ndarray | None = None  # uint8 (N, H, W, 3)
    factors: Any = None  # DataFrame of known factors (Shapes: what the prompt asked for)
    judged: Any = None  # DataFrame of factors the judge reads from the images
    record_half: str = "uncond"
    layer: str = "mid_block"

    def __len__(self) -> int:
        return int(self.h.shape[0])

    def sigma_along(self, vectors: np.ndarray, timesteps: np.ndarray) -> np.ndarray:
        """std over samples of h·v at each vector's timestep (v unit)."""
        out = np.ones(len(vectors), np.float32)
        for j, (v, t) in enumerate(zip(vectors, timesteps)):
            if not np.any(v):
                continue
            ti = int(np.argmin(np.abs(self.timesteps - int(t)))) if len(vectors) > 1 else None
            if ti is None:  # one vector for all steps: pool every step's spread
                proj = self.h.reshape(-1, self.h.shape[-1]) @ v
                proj = proj.reshape(len(self), -1)
                s = float(np.sqrt(np.mean(np.var(proj, axis=0, ddof=1))))
            else:
                s = float(np.std(self.h[:, ti] @ v, ddof=1))
            out[j] = s if s > 0 else 1.0
        return out


def sample_bank(pipe, prompts: list[str], *, seeds=0, steps: int = 10, guidance_scale: float | None = None,
                eta: float = 1.0, batch: int = 32, record_half: str = "uncond", factors=None,
                progress=None, layer: str = "mid_block") -> HBank:
    """Generate one image per prompt (seeds: first seed, or one per prompt) recording h at every step."""
    from backends.generative import hspace as hspace

    prompts = list(prompts)
    if len(prompts) < 2:
        raise InputError(f"a bank needs at least 2 samples, but has {len(prompts)}")
    seeds = [int(seeds) + i for i in range(len(prompts))] if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]
    hs, imgs, ts, shape = [], [], None, None
    if progress is not None:
        progress(0.0, f"sampling h: 0/{len(prompts)}")
    for s in range(0, len(prompts), batch):
        tr = hspace.generate(pipe, prompts[s: s + batch], seeds=seeds[s: s + batch], steps=steps,
                             guidance_scale=guidance_scale, eta=eta, record_half=record_half, layer=layer)
        hs.append(tr.h.flatten(2).permute(1, 0, 2).numpy())
        imgs.append(tr.images)
        ts, shape = tr.timesteps, tr.h_shape
        if progress is not None:
            progress(min(1.0, (s + batch) / len(prompts)), f"sampling h: {min(s + batch, len(prompts))}/{len(prompts)}")
    return HBank(np.concatenate(hs), shape, ts, prompts, seeds, np.concatenate(imgs), factors, record_half=record_half,
                 layer=layer)


def shapes_prompts(n: int, seed: int = 0, split: str = "test", world: str | None = None):
    """n single-object prompts of a world (default: the embedded one) and the factors each asks for."""
    from backends.plugins import DEFAULT_WORLD, get_prompt_set

    return get_prompt_set(world or DEFAULT_WORLD)(n, seed=seed, split=split)


# ---------------------------------------------------------------------------------------
# 1. Unsupervised: PCA per timestep

class PCAAccumulator:
    """Streaming PCA of rows (incremental for large N).

    D ≤ max_cov_dim: exact running mean and scatter matrix (float64), eigen-decomposed at the end.
    Larger D: scikit-learn's IncrementalPCA (sequential Karhunen–Loève), batches of ≥ k rows.
    """

    def __init__(self, k: int, max_cov_dim: int = 8192):
        self.k = int(k)
        self.max_cov_dim = max_cov_dim
        self.n = 0
        self._sum = self._scatter = self._ipca = None

    def partial_fit(self, x: np.ndarray) -> PCAAccumulator:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] <= self.max_cov_dim:
            if self._sum is None:
                self._sum = np.zeros(x.shape[1])
                self._scatter = np.zeros((x.shape[1], x.shape[1]))
            self._sum += x.sum(0)
            self._scatter += x.T @ x
        else:
            from sklearn.decomposition import IncrementalPCA

            if self._ipca is None:
                self._ipca = IncrementalPCA(n_components=self.k)
            self._ipca.partial_fit(x)
        self.n += len(x)
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(components (k, D) unit rows, std along each (k,), mean (D,))."""
        if self.n < 2:
            raise InputError("PCA needs at least 2 samples")
        if self._ipca is not None:
            p = self._ipca
            return p.components_.astype(np.float32), np.sqrt(p.explained_variance_).astype(np.float32), p.mean_.astype(np.float32)
        mean = self._sum / self.n
        cov = (self._scatter - self.n * np.outer(mean, mean)) / (self.n - 1)
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1][: self.k]
        return v[:, order].T.astype(np.float32), np.sqrt(np.clip(w[order], 0, None)).astype(np.float32), mean.astype(np.float32)


def pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of rows x (N, D): (components (k, D) unit rows, std along each (k,), mean (D,)).

    N < D: eigen-decomposition of the N×N Gram matrix of the centred rows (the kernel trick);
    otherwise the streaming accumulator.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    k = min(int(k), n - 1, d)
    if n < 2 or k < 1:
        raise InputError(f"PCA needs at least 2 samples, but has {n}")
    if n < d:
        mean = x.mean(0)
        xc = x - mean
        w, u = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(w)[::-1][:k]
        w, u = np.clip(w[order], 1e-30, None), u[:, order]
        comps = (xc.T @ u / np.sqrt(w)).T  # right singular vectors
        return comps.astype(np.float32), np.sqrt(w / (n - 1)).astype(np.float32), mean.astype(np.float32)
    return PCAAccumulator(k).partial_fit(x).result()


def align_signs(vectors: np.ndarray) -> np.ndarray:
    """vectors (T, k, D): flip component j at step t when it points against step t−1 (chained)."""
    v = vectors.copy()
    for t in range(1, len(v)):
        s = np.sign(np.einsum("kd,kd->k", v[t], v[t - 1]))
        s[s == 0] = 1
        v[t] *= s[:, None]
    return v


def pca_directions(bank: HBank, k: int = 25, *, prefix: str = "pc") -> list[Direction]:
    """Top-k principal directions of h at every timestep, signs aligned across timesteps."""
    T = bank.h.shape[1]
    comps, stds = [], []
    for t in range(T):
        c, s, _ = pca(bank.h[:, t], k)
        comps.append(c)
        stds.append(s)
    k = min(len(c) for c in comps)
    comps = align_signs(np.stack([c[:k] for c in comps]))
    stds = np.stack([s[:k] for s in stds])
    return [Direction(f"{prefix}{j + 1}", f"PC {j + 1}", "pca", comps[:, j], bank.timesteps, stds[:, j], bank.h_shape,
                      DEFAULT_STRENGTH, {"component": j + 1, "n_samples": len(bank), "layer": bank.layer})
            for j in range(k)]


def streaming_pca_directions(pipe, prompts: list[str], k: int = 25, *, seeds=0, steps: int = 10,
                             guidance_scale: float | None = None, eta: float = 1.0, batch: int = 32,
                             record_half: str = "uncond", max_cov_dim: int = 8192, progress=None,
                             layer: str = "mid_block") -> list[Direction]:
    """PCA directions for large N without keeping h in memory: samples are generated in batches
    and each timestep's PCA is accumulated incrementally (``PCAAccumulator``). σ_j is the std
    along component j; signs are aligned across timesteps as in ``pca_directions``."""
    from backends.generative import hspace as hspace

    prompts = list(prompts)
    if len(prompts) < 2:
        raise InputError(f"PCA needs at least 2 samples, but has {len(prompts)}")
    seeds = [int(seeds) + i for i in range(len(prompts))] if isinstance(seeds, (int, np.integer)) else [int(x) for x in seeds]
    accs, ts, shape = None, None, None
    if progress is not None:
        progress(0.0, f"sampling h: 0/{len(prompts)}")
    for s in range(0, len(prompts), batch):
        tr = hspace.generate(pipe, prompts[s: s + batch], seeds=seeds[s: s + batch], steps=steps,
                             guidance_scale=guidance_scale, eta=eta, record_half=record_half, decode_images=False,
                             layer=layer)
        h = tr.h.flatten(2).numpy()  # (T, b, D)
        if accs is None:
            accs = [PCAAccumulator(k, max_cov_dim) for _ in range(len(h))]
            ts, shape = tr.timesteps, tr.h_shape
        for acc, rows in zip(accs, h):
            acc.partial_fit(rows)
        if progress is not None:
            progress(min(1.0, (s + batch) / len(prompts)), f"PCA: {min(s + batch, len(prompts))}/{len(prompts)} samples")
    res = [a.result() for a in accs]
    kk = min(len(r[0]) for r in res)
    comps = align_signs(np.stack([r[0][:kk] for r in res]))
    stds = np.stack([r[1][:kk] for r in res])
    return [Direction(f"pc{j + 1}", f"PC {j + 1}", "pca", comps[:, j], ts, stds[:, j], shape, DEFAULT_STRENGTH,
                      {"component": j + 1, "n_samples": len(prompts), "streaming": True, "layer": layer})
            for j in range(kk)]


# ---------------------------------------------------------------------------------------
# 3. Supervised: mean(h+) − mean(h−)

def mean_difference(bank: HBank, pos, neg, *, id: str, name: str, kind: str = "supervised", meta: dict | None = None) -> Direction:
    """v_t = mean(h⁺_t) − mean(h⁻_t) per timestep; σ_t along it over the bank; default strength
    = the median of |v_t| / σ_t (the step from the negative mean to the positive one)."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    if pos.dtype == bool:
        pos = np.flatnonzero(pos)
    if neg.dtype == bool:
        neg = np.flatnonzero(neg)
    if len(pos) == 0 or len(neg) == 0:
        raise InputError(f"direction {name!r}: needs samples on both sides, but has {len(pos)} positive and {len(neg)} negative")
    diff = bank.h[pos].mean(0) - bank.h[neg].mean(0)  # (T, D)
    units, norms = zip(*[_unit(v) for v in diff])
    units = np.stack(units)
    sigma = bank.sigma_along(units, bank.timesteps)
    ratio = np.asarray(norms) / sigma
    strength = float(np.median(ratio[ratio > 0])) if np.any(ratio > 0) else DEFAULT_STRENGTH
    m = {"n_pos": int(len(pos)), "n_neg": int(len(neg)), "layer": bank.layer}
    m.update(meta or {})
    return Direction(id, name, kind, units, bank.timesteps, sigma, bank.h_shape, strength, m)


def _labels(bank: HBank, factor: str, labels: str):
    table = bank.judged if labels == "judge" else bank.factors
    if table is None:
        raise InputError(f"this bank has no {'judged' if labels == 'judge' else 'known'} factors")
    if factor not in table.columns:
        raise InputError(f"Unknown factor: {factor!r}. Must be one of: {', '.join(c for c in table.columns if not c.endswith('_conf'))}")
    return table[factor].astype(str).to_numpy()


def factor_direction(bank: HBank, factor: str, value: str, *, from_value: str | None = None,
                     labels: str = "truth") -> Direction:
    """'factor → value': mean h of samples with that value minus mean h of the others (or of `from_value`).

    labels: "truth" (what the prompt asked for) or "judge" (what the judge reads in the image).
    """
    lab = _labels(bank, factor, labels)
    if value not in set(lab):
        raise InputError(f"no sample in the bank has {factor}={value!r}; values: {', '.join(sorted(set(lab)))}")
    pos = lab == value
    neg = (lab == from_value) if from_value else ~pos
    name = f"{factor}: {from_value} → {value}" if from_value else f"{factor} → {value}"
    did = _slug(f"{factor}-{from_value + '-' if from_value else ''}{value}")
    return mean_difference(bank, pos, neg, id=did, name=name,
                           meta={"factor": factor, "value": value, "from": from_value, "labels": labels})


def group_direction(bank: HBank, pos: list[int], neg: list[int], *, name: str = "group A → group B") -> Direction:
    """Direction from two groups of bank items (e.g. two selections in the Atlas)."""
    n = len(bank)
    for i in list(pos) + list(neg):
        if not 0 <= int(i) < n:
            raise InputError(f"item {i} is outside this bank of {n} samples")
    return mean_difference(bank, np.asarray(pos, int), np.asarray(neg, int), id=_slug(name), name=name, kind="groups")


def prompt_pair_direction(pipe, prompt_a: str, prompt_b: str, *, n: int = 16, seed: int = 0, steps: int = 10,
                          guidance_scale: float | None = None, eta: float = 1.0, record_half: str = "uncond",
                          reference: HBank | None = None, layer: str = "mid_block") -> Direction:
    """'A → B': mean h over n seeds of prompt B minus that of prompt A (same seeds).

    σ comes from `reference` (a bank) when given, otherwise from the 2n samples themselves.
    With record_half "uncond" the first step's difference is zero (same noise, empty prompt).
    """
    for p, nm in ((prompt_a, "prompt_a"), (prompt_b, "prompt_b")):
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{nm} has to be a non-empty prompt")
    seeds = [seed + i for i in range(n)]
    b = sample_bank(pipe, [prompt_a] * n + [prompt_b] * n, seeds=seeds + seeds, steps=steps,
                    guidance_scale=guidance_scale, eta=eta, record_half=record_half, layer=layer)
    d = mean_difference(b, np.arange(n, 2 * n), np.arange(n), id=_slug(f"{prompt_a}-to-{prompt_b}"),
                        name=f"{prompt_a} → {prompt_b}", kind="prompt-pair",
                        meta={"prompt_a": prompt_a, "prompt_b": prompt_b, "n": n})
    if reference is not None and reference.h.shape[1:] == b.h.shape[1:] and reference.layer == layer:
        d.sigma = reference.sigma_along(d.vectors, d.timesteps)
    return d


def orthogonalize(direction: Direction, others: list[Direction], bank: HBank | None = None) -> Direction:
    """Conditional manipulation: v = (I − V(VᵀV)⁻¹Vᵀ) v₀ at every timestep (V: the other directions)."""
    if not others:
        return direction
    out = []
    for t, v0 in zip(direction.timesteps, direction.vectors):
        V = np.stack([o.vectors[o.index_for(t)] for o in others], 1).astype(np.float64)  # (D, m)
        if V.shape[0] != len(v0):
            raise InputError("directions to orthogonalise against live in a different h-space")
        coef, *_ = np.linalg.lstsq(V, v0.astype(np.float64), rcond=None)
        out.append(_unit(v0 - V @ coef)[0])
    vecs = np.stack(out).astype(np.float32)
    sigma = bank.sigma_along(vecs, direction.timesteps) if bank is not None else direction.sigma.copy()
    names = ", ".join(o.name for o in others)
    return Direction(direction.id + "-orth", f"{direction.name} (⊥ {names})", direction.kind, vecs, direction.timesteps,
                     sigma, direction.h_shape, direction.default_strength,
                     {**direction.meta, "orthogonal_to": [o.id for o in others]})


# ---------------------------------------------------------------------------------------
# 2. Image-specific: top right singular vectors of ∂ε/∂h (never forming the Jacobian)

def jacobian_directions(pipe, traj, step: int, *, k: int = 3, iters: int = 50, tol: float = 1e-5, mask=None,
                        row: int = 0, seed: int = 0, bank: HBank | None = None) -> tuple[list[Direction], np.ndarray]:
    """Top-k right singular vectors of J = ∂ε̂/∂h at one step of a trajectory, by subspace iteration.

    Each iteration: one forward-mode JVP (J V for the k vectors at once, batched as k rows) and
    one VJP (Jᵀ (J V)), then a QR; stops when the subspace moves less than `tol` or after
    `iters`. mask: optional weights on the output (h, w) at latent resolution: directions that
    change that region. Returns (directions, singular values). The direction found at `step`
    is applied at every step; σ is the spread of h along it over `bank` if given, else the RMS
    entry of this image's h at that step.
    """
    import torch
    from torch.func import jvp, vjp

    from backends.generative import hspace as hspace

    shape = traj.h_shape
    D = int(np.prod(shape))
    k = int(k)
    if not 1 <= k <= min(D, 32):
        raise InputError(f"k has to be between 1 and {min(D, 32)}, but is {k}")
    g = torch.Generator().manual_seed(seed)
    V = torch.linalg.qr(torch.randn(D, k, generator=g))[0]  # (D, k) orthonormal columns
    zeros = torch.zeros((k,) + shape, dtype=pipe.dtype, device=pipe.device)
    if mask is not None:
        mask = torch.as_tensor(np.asarray(mask, np.float32))
    S = torch.zeros(k)
    with hspace.jacobian_session(pipe, traj, step, row=row, mask=mask) as f:
        _, pullback = vjp(f, zeros)
        it = 0
        for it in range(1, int(iters) + 1):  # noqa: B007  (the count is reported below)
            tangents = V.T.reshape((k,) + shape).to(zeros)
            _, JV = jvp(f, (zeros,), (tangents,))
            (JtJV,) = pullback(JV)
            W = JtJV.reshape(k, D).T.double().cpu()
            Q, R = torch.linalg.qr(W)
            Q = Q * torch.sign(torch.diagonal(R)).clamp(min=0).mul(2).sub(1)  # keep orientation stable
            change = float((1 - (Q.T @ V.double()).abs().diagonal()).max())
            V = Q.float()
            S = JV.reshape(k, -1).norm(dim=1).cpu()
            if change < tol:
                break
        # order by singular value (Rayleigh–Ritz on the final subspace)
        tangents = V.T.reshape((k,) + shape).to(zeros)
        _, JV = jvp(f, (zeros,), (tangents,))
        M = JV.reshape(k, -1).double().cpu()
        w, U = torch.linalg.eigh(M @ M.T)  # = Vᵀ JᵀJ V
        order = torch.argsort(w, descending=True)
        V = (V.double() @ U[:, order]).float()
        S = w[order].clamp(min=0).sqrt().float()
    t = int(traj.timesteps[step])
    vecs = V.T.numpy()
    # a sign convention: the largest-magnitude entry positive
    vecs = vecs * np.sign(vecs[np.arange(k), np.abs(vecs).argmax(1)])[:, None]
    if bank is not None and bank.h.shape[-1] == D:
        sig = bank.sigma_along(vecs, np.full(k, t))
    else:
        h = traj.h[step][row].flatten().numpy()
        sig = np.full(k, float(np.sqrt(np.mean(h ** 2))) or 1.0, np.float32)
    dirs = [Direction(f"jac-s{step}-{j + 1}", f"image direction {j + 1} (step {step})", "jacobian", vecs[j:j + 1],
                      np.array([t]), sig[j:j + 1], shape, DEFAULT_STRENGTH,
                      {"step": int(step), "timestep": t, "singular_value": float(S[j]), "iterations": it,
                       "masked": mask is not None, "layer": traj.layer}) for j in range(k)]
    return dirs, S.numpy()


# ---------------------------------------------------------------------------------------
# 4. Text directions: a shift of the text conditioning

def text_direction(pipe, prompt_a: str, prompt_b: str) -> Direction:
    """E(B) − E(A) of the token states (and pooled vector): strength 1 turns A's conditioning into B's."""
    import torch

    for p, nm in ((prompt_a, "prompt_a"), (prompt_b, "prompt_b")):
        if not isinstance(p, str) or not p.strip():
            raise InputError(f"{nm} has to be a non-empty prompt")
    with torch.inference_mode():
        cond, _ = pipe.encode_prompt([prompt_a, prompt_b], do_classifier_free_guidance=False)
    ds = (cond.states[1] - cond.states[0]).float().cpu()  # (L, D)
    dp = (cond.pooled[1] - cond.pooled[0]).float().cpu()[None]  # (1, D)
    if dp.shape[-1] != ds.shape[-1]:  # SDXL: a pooled vector of its own encoder and width is kept (a zero row)
        dp = torch.zeros(1, ds.shape[-1])
    v = torch.cat([ds, dp]).numpy()
    return Direction(_slug(f"text-{prompt_a}-to-{prompt_b}"), f"text: {prompt_a} → {prompt_b}", "text",
                     v.reshape(1, -1), np.array([-1]), np.ones(1), v.shape, 1.0,
                     {"prompt_a": prompt_a, "prompt_b": prompt_b})


def text_cond_delta(directions: list[Direction], strengths: list[float]):
    """A function Conditioning -> Conditioning adding Σ s·(E(B) − E(A)) to the conditional half."""
    import torch

    from backends.generative.hspace import Conditioning
    from backends.generative.pipeline import PromptEmbeds

    pairs = [(d, s) for d, s in zip(directions, strengths) if d.kind == "text" and s != 0]
    if not pairs:
        return None

    def apply(c: Conditioning) -> Conditioning:
        states, pooled = c.cond.states.clone(), c.cond.pooled.clone()
        mask, moved = c.cond.mask.clone(), False
        L, D = states.shape[1], states.shape[2]
        for d, s in pairs:
            v = torch.from_numpy(d.vectors[0].reshape(d.h_shape)).to(states)
            if v.shape[0] - 1 != L or v.shape[1] != D:
                raise InputError(f"text direction {d.id!r} was made for another text encoder")
            states = states + s * v[:L]
            if pooled.shape[-1] == D and bool(v[L].abs().max() > 0):  # a zero row: the pooled vector is kept
                pooled, moved = pooled + s * v[L], True
            mask = mask | (v[:L].abs().amax(-1) > 0)
        if moved:  # (SDXL's pooled vector, its own encoder's and of another width, is never moved)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return Conditioning(PromptEmbeds(states, mask, pooled), c.uncond, c.smap, c.guidance_scale)

    return apply


# ---------------------------------------------------------------------------------------
# Composing an edit

def check_strength(s, name: str = "strength") -> float:
    try:
        v = float(s)
    except (TypeError, ValueError):
        raise InputError(f"{name} has to be a number, but is {s!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} has to be a finite number, but is {s!r}")
    if abs(v) > MAX_STRENGTH:
        raise InputError(f"{name} has to be between {-MAX_STRENGTH:g} and {MAX_STRENGTH:g} (σ), but is {v:g}")
    return v


def compose_deltas(directions: list[Direction], strengths, traj, *, t_range: tuple[float, float] = (0.0, 1.0)):
    """Δh per step (T, K, *h_shape) for K frames; strengths: (n_dirs,) or (K, n_dirs), in σ.

    t_range: the fraction of the denoising steps that is edited, (0, 1) = all; (0, 0.5) = the
    first (noisiest) half. Text directions are skipped here (see ``text_cond_delta``).
    """
    import torch

    s = np.asarray(strengths, dtype=np.float64)
    if s.ndim == 1:
        s = s[None]
    if s.shape[1] != len(directions):
        raise ValueError(f"{s.shape[1]} strengths for {len(directions)} directions")
    T, shape = traj.steps, traj.h_shape
    D = int(np.prod(shape))
    lo, hi = float(t_range[0]), float(t_range[1])
    if not (0 <= lo < hi <= 1):
        raise InputError(f"t_range has to satisfy 0 ≤ start < end ≤ 1, but is ({lo}, {hi})")
    i0, i1 = int(math.floor(lo * T + 1e-9)), max(int(math.ceil(hi * T - 1e-9)), int(math.floor(lo * T + 1e-9)) + 1)
    layers = {layer_of(d) for d in directions if d.kind != "text"}
    if len(layers) > 1:
        raise InputError(f"directions of different layers ({', '.join(sorted(layers))}) cannot be combined in one edit")
    if layers and layers != {traj.layer}:
        shape = directions[[d.kind != "text" for d in directions].index(True)].h_shape
        D = int(np.prod(shape))
    out = np.zeros((T, len(s), D), np.float32)
    for d, col in zip(directions, s.T):
        if d.kind == "text" or not np.any(col):
            continue
        if d.dim != D:
            raise InputError(f"direction {d.id!r} was made for h of shape {d.h_shape}, this model's h is {shape}")
        for i in range(i0, min(i1, T)):
            out[i] += col[:, None].astype(np.float32) * d.delta_at(int(traj.timesteps[i]))[None]
    return torch.from_numpy(out.reshape((T, len(s)) + tuple(shape)))


def layer_of(d: Direction) -> str:
    """The UNet block a direction lives in (h-space proper: 'mid_block')."""
    return str(d.meta.get("layer", "mid_block"))


def render(pipe, traj, directions: list[Direction], strengths, *, t_range=(0.0, 1.0), asymmetric: bool = False,
           delta_half: str = "both") -> np.ndarray:
    """Images (K, H, W, 3) of the trajectory edited with strengths (K, n_dirs) (or (n_dirs,) for one).

    delta_half: which guidance half gets Δh ("both", or "cond": amplified by the guidance scale)."""
    from backends.generative import hspace as hspace

    raw = np.asarray(strengths, dtype=object)
    raw2 = raw[None] if raw.ndim == 1 else raw
    if raw2.ndim != 2 or raw2.shape[1] != len(directions):
        raise InputError(f"{raw2.shape[-1] if raw2.ndim else 0} strengths for {len(directions)} directions")
    s2 = np.array([[check_strength(v, f"strength of {directions[j].id!r}") for j, v in enumerate(row)] for row in raw2],
                  dtype=np.float64).reshape(raw2.shape)
    hdirs = [d for d in directions if d.kind != "text"]
    hs = s2[:, [j for j, d in enumerate(directions) if d.kind != "text"]]
    deltas = compose_deltas(hdirs, hs, traj, t_range=t_range) if hdirs else None
    tdirs = [(d, j) for j, d in enumerate(directions) if d.kind == "text"]
    cond_delta = None
    if tdirs:
        cols = [j for _, j in tdirs]
        if len(s2) != 1 and not np.all(s2[:, cols] == s2[:1, cols]):
            raise InputError("text directions edit all frames with one strength (render one frame at a time)")
        cond_delta = text_cond_delta([d for d, _ in tdirs], [float(s2[0, j]) for j in cols])
    if deltas is None and cond_delta is None:
        return traj.images if len(s2) == 1 else np.repeat(traj.images[:1], len(s2), 0)
    if deltas is None:
        import torch

        deltas = torch.zeros((traj.steps, len(s2)) + traj.h_shape)
    layers = [layer_of(d) for d in hdirs]
    return hspace.edit(pipe, traj, deltas, cond_delta=cond_delta, asymmetric=asymmetric,
                       layer=layers[0] if layers else None, delta_half=delta_half)


def traversal(pipe, traj, direction: Direction, *, strength: float | None = None, frames: int = 11,
              t_range=(0.0, 1.0), delta_half: str = "both") -> tuple[np.ndarray, np.ndarray]:
    """Frames along one direction from −strength to +strength: (strengths (F,), images (F, H, W, 3))."""
    s = direction.default_strength if strength is None else check_strength(strength)
    frames = int(frames)
    if not 2 <= frames <= 64:
        raise InputError(f"frames has to be between 2 and 64, but is {frames}")
    ss = np.linspace(-s, s, frames)
    if direction.kind == "text":
        ss = np.linspace(0, s, frames)
        imgs = np.concatenate([render(pipe, traj, [direction], [v], t_range=t_range) for v in ss])
    else:
        imgs = render(pipe, traj, [direction], ss[:, None], t_range=t_range, delta_half=delta_half)
    return ss, imgs


# ---------------------------------------------------------------------------------------
# Smoothness and what a direction changes

def istd(frames: np.ndarray) -> float:
    """ISTD (Smooth Diffusion): std of the pixel L2 distances between adjacent frames (uint8 scale /255)."""
    f = np.asarray(frames, dtype=np.float64) / 255.0
    if len(f) < 3:
        raise InputError("ISTD needs at least 3 frames")
    d = np.sqrt(((f[1:] - f[:-1]) ** 2).reshape(len(f) - 1, -1).sum(1))
    return float(np.std(d))


ORDINAL = {"size": ("small", "medium", "large")}


def factor_changes(before, after, factors=("shape", "colour", "size", "position")) -> dict:
    """Per factor, the share of samples whose judged value differs between two DataFrames."""
    return {f: float(np.mean(before[f].astype(str).to_numpy() != after[f].astype(str).to_numpy())) for f in factors}


def judge_direction(pipe, direction: Direction, sources, judge, *, strength: float | None = None,
                    t_range=(0.0, 1.0), factors=("shape", "colour", "size", "position"), istd_samples: int = 4,
                    delta_half: str = "both", progress=None) -> dict:
    """What a direction changes, read by the judge on a batch trajectory `sources` (M samples).
    progress(fraction, text) is told before each of its stages (the + and − edits, each traversal).

    Edits every sample by ±strength (default: the direction's default), judges before and
    after, and reports per factor the share of (sample, side) pairs whose value changed,
    the disentanglement score (share of the total change in the top factor), a name from what
    the + side becomes ("colour → blue", "size +"), and ISTD of 11-frame traversals.
    """
    s = direction.default_strength if strength is None else check_strength(strength)
    m = sources.batch
    tell = progress or (lambda fraction, text: None)
    n_istd = min(istd_samples, m) if (istd_samples and direction.kind != "text") else 0
    stages = 2 + n_istd
    base = judge.predict(sources.images)
    sides = {}
    for i, sign in enumerate((+1, -1)):
        tell(i / stages, f"editing {m} sources by {'+' if sign > 0 else '−'}{s:g}σ")
        if direction.kind == "text":  # the text conditioning of every source, one strength
            imgs = render(pipe, sources, [direction], np.full((m, 1), sign * s))
        else:
            imgs = render(pipe, sources, [direction], np.full((m, 1), sign * s), t_range=t_range,
                          delta_half=delta_half)
        sides[sign] = (imgs, judge.predict(imgs))
    change = {f: float(np.mean([factor_changes(base, sides[sg][1], (f,))[f] for sg in (1, -1)])) for f in factors}
    total = sum(change.values())
    share = {f: (v / total if total > 0 else 0.0) for f, v in change.items()}
    top = max(share, key=share.get)
    name = _name_from(top, base, sides[1][1], sides[-1][1]) if total > 0 else "no visible change"
    report = {"changes": change, "shares": share, "dominant": top, "disentanglement": share[top],
              "any_change": float(np.mean([(base[list(factors)].astype(str).to_numpy() != sides[sg][1][list(factors)].astype(str).to_numpy()).any(1).mean() for sg in (1, -1)])),
              "name": name, "strength": s}
    if istd_samples and direction.kind != "text":
        vals = []
        for r in range(n_istd):
            tell((2 + r) / stages, f"traversal {r + 1}/{n_istd} for ISTD")
            sub = _row(sources, r)
            _, frames = traversal(pipe, sub, direction, strength=s, t_range=t_range, delta_half=delta_half)
            vals.append(istd(frames))
        report["istd"] = float(np.mean(vals))
    tell(1.0, "judged")
    return report


def _row(traj, r: int):
    """A batch-1 view of row r of a trajectory."""
    import copy

    from backends.generative.hspace import _row_conditioning

    sub = copy.copy(traj)
    sub.xs, sub.noise, sub.h = traj.xs[:, r: r + 1], traj.noise[:, r: r + 1], traj.h[:, r: r + 1]
    sub.cond = _row_conditioning(traj.cond, r)
    sub.images = traj.images[r: r + 1] if traj.images is not None else None
    sub.prompts = traj.prompts[r: r + 1]
    return sub


def _name_from(factor: str, base, plus, minus) -> str:
    b, p = base[factor].astype(str).to_numpy(), plus[factor].astype(str).to_numpy()
    changed = b != p
    if factor in ORDINAL:
        order = {v: i for i, v in enumerate(ORDINAL[factor])}
        diff = np.mean([order.get(y, 0) - order.get(x, 0) for x, y in zip(b, p)])
        if diff == 0:
            mb = minus[factor].astype(str).to_numpy()
            diff = -np.mean([order.get(y, 0) - order.get(x, 0) for x, y in zip(b, mb)])
        return f"{factor} {'+' if diff >= 0 else '−'}"
    if changed.any():
        vals, counts = np.unique(p[changed], return_counts=True)
        return f"{factor} → {vals[counts.argmax()]}"
    mb = minus[factor].astype(str).to_numpy()
    vals, counts = np.unique(mb[b != mb], return_counts=True)
    return f"{factor} ← {vals[counts.argmax()]}" if len(vals) else factor


# ---------------------------------------------------------------------------------------
# Export / import (safetensors + JSON metadata)

def save_directions(directions: list[Direction], path, *, model: str = "") -> str:
    """Write directions to a .safetensors file (vectors, timesteps, sigma) with JSON metadata."""
    import torch
    from safetensors.torch import save_file

    if not directions:
        raise InputError("there are no directions to export")
    tensors, meta = {}, []
    for i, d in enumerate(directions):
        tensors[f"{i}.vectors"] = torch.from_numpy(d.vectors.copy())
        tensors[f"{i}.timesteps"] = torch.from_numpy(d.timesteps.copy())
        tensors[f"{i}.sigma"] = torch.from_numpy(d.sigma.copy())
        meta.append({"id": d.id, "name": d.name, "kind": d.kind, "h_shape": list(d.h_shape),
                     "default_strength": float(d.default_strength),
                     "meta": {k: v for k, v in d.meta.items() if _jsonable(v)}})
    save_file(tensors, str(path), metadata={"format": "latent-atlas-directions", "version": str(FORMAT_VERSION),
                                            "model": model, "directions": json.dumps(meta)})
    return str(path)


MAX_IMPORT_BYTES = 256 * 1024 * 1024


def load_directions(path, *, h_shape: tuple[int, ...] | None = None) -> list[Direction]:
    """Read directions written by ``save_directions``; checks every field (and h_shape if given)."""
    import os

    from safetensors import safe_open

    path = str(path)
    if not os.path.isfile(path):
        raise InputError(f"directions file not found: {os.path.basename(path)}")
    if os.path.getsize(path) > MAX_IMPORT_BYTES:
        raise InputError(f"directions file is larger than {MAX_IMPORT_BYTES >> 20} MB")
    try:
        with safe_open(path, framework="np") as f:
            md = f.metadata() or {}
            if md.get("format") != "latent-atlas-directions":
                raise InputError("not a directions file (its metadata has no format 'latent-atlas-directions')")
            entries = json.loads(md.get("directions", "[]"))
            out = []
            for i, e in enumerate(entries):
                keys = [f"{i}.vectors", f"{i}.timesteps", f"{i}.sigma"]
                if any(k not in f.keys() for k in keys):
                    raise InputError(f"directions file: entry {i} lacks its tensors")
                if e.get("kind") not in KINDS:
                    raise InputError(f"directions file: entry {i} has unknown kind {e.get('kind')!r}")
                d = Direction(str(e["id"])[:80], str(e["name"])[:120], e["kind"], f.get_tensor(keys[0]),
                              f.get_tensor(keys[1]), f.get_tensor(keys[2]), tuple(e["h_shape"]),
                              float(e.get("default_strength", DEFAULT_STRENGTH)), dict(e.get("meta", {})))
                if h_shape is not None and d.kind != "text" and layer_of(d) == "mid_block" and tuple(d.h_shape) != tuple(h_shape):
                    raise InputError(f"direction {d.id!r} was made for h of shape {tuple(d.h_shape)}; this model's h is {tuple(h_shape)}")
                check_strength(d.default_strength, f"default strength of {d.id!r}")
                out.append(d)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
        raise InputError(f"could not read the directions file: {exc}") from None
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise InputError(f"could not read the directions file: {exc}") from None
    return out


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:60] or "direction"


__all__ = [
    "Direction", "HBank", "sample_bank", "shapes_prompts", "PCAAccumulator", "pca", "align_signs", "pca_directions",
    "streaming_pca_directions",
    "mean_difference", "factor_direction", "group_direction", "prompt_pair_direction", "orthogonalize",
    "jacobian_directions", "text_direction", "text_cond_delta", "check_strength", "compose_deltas", "render",
    "traversal", "istd", "factor_changes", "judge_direction", "save_directions", "load_directions",
]
