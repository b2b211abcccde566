"""The h-space itself as a corpus: pooled h of N generated samples at a chosen denoising step.

    corpus = load_corpus("hspace", n=200, step=5)   # vectors: h at step 5 of 10, mean over positions
    corpus.meta  # prompt, seed, shape/colour/size/position asked for (+ judged_* when a judge exists)

The samples (and h at every step) come from one bank per model (``shapes_bank``), cached in
memory and on disk, so the Directions tab (PCA, supervised directions) and the Atlas share it.
Helpers put any direction on a map axis (``direction_axis``) and give the trajectory of one
sample across steps in the same coordinates (``trajectory``).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from backends.corpora.corpus import Corpus, register_corpus
from backends.errors import InputError

MAX_SAMPLES = 5000
# The corpus's default size is the Directions tab's bank size: one bank (one key) serves both, so the
# warm-up after launch that opens this corpus also readies PCA discovery, and a later start reads it
# from the disk cache.
DEFAULT_SAMPLES = 200
_BANKS: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
_BUILDING: dict = {}


def pipe_fingerprint(pipe) -> str:
    """A content hash of the UNet's weights (the bank must change when the generator does)."""
    import torch

    cached = getattr(pipe, "_hspace_fingerprint", None)
    params = list(pipe.unet.parameters())
    stamp = (len(params), float(sum(float(p.detach().float().abs().sum()) for p in params[:: max(1, len(params) // 16)])))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    h = hashlib.sha1()
    with torch.no_grad():
        for p in params:
            h.update(p.detach().float().cpu().numpy().tobytes())
    fp = h.hexdigest()[:16]
    try:
        pipe._hspace_fingerprint = (stamp, fp)
    except AttributeError:
        pass
    return fp


def default_pipe():
    """The default world's generator pipeline, or a clear message when its weights are not there."""
    from backends.plugins import get_generator

    return get_generator().load_pipeline()


def default_record_half() -> str:
    """The guidance half the default generator's h is read from in the Directions tab (its config
    says; "uncond" otherwise): the hspace corpus reads the same, so the two share one bank."""
    from backends.generative.hspace import RECORD_HALVES
    from backends.plugins import get_generator

    try:
        half = dict(get_generator().defaults()).get("directions_record_half")
    except Exception:  # noqa: BLE001 - a generator without defaults reads the unconditional half
        half = None
    return half if half in RECORD_HALVES else "uncond"


def default_judge():
    """The default world's factor judge, or None when it has none (or its weights are missing)."""
    from backends.plugins import get_evaluator

    return get_evaluator()


def shapes_bank(pipe=None, n: int = 200, *, seed: int = 0, steps: int = 10, eta: float = 1.0,
                guidance_scale: float | None = None, record_half: str = "uncond", cache=None, judge=None,
                progress=None, layer: str = "mid_block"):
    """h at every step for n single-object Shapes prompts (test split), cached per model and settings."""
    from backends.cache import content_key
    from backends.generative import directions as D

    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InputError(f"n must be a whole number of samples, but is {n!r}") from None
    if not 8 <= n <= MAX_SAMPLES:
        raise InputError(f"n must be between 8 and {MAX_SAMPLES}, but is {n}")
    pipe = pipe or default_pipe()
    g = pipe.default_guidance_scale if guidance_scale is None else float(guidance_scale)
    key = content_key("hbank-v1", pipe_fingerprint(pipe), n, int(seed), int(steps), float(eta), g, record_half,
                      *([] if layer == "mid_block" else [layer]))
    with _LOCK:
        if key in _BANKS:
            _BANKS.move_to_end(key)
            return _BANKS[key]
        lock = _BUILDING.setdefault(key, threading.Lock())
    with lock:
        with _LOCK:
            if key in _BANKS:
                return _BANKS[key]
        prompts, factors = D.shapes_prompts(n, seed=seed)
        bank = None
        if cache is not None:
            arrays = cache.get_arrays("hbank", key)
            if arrays is not None:
                bank = D.HBank(arrays["h"], tuple(int(s) for s in arrays["h_shape"]), arrays["timesteps"], prompts,
                               [int(seed) + i for i in range(n)], arrays["images"], factors, record_half=record_half,
                               layer=layer)
        if bank is None:
            bank = D.sample_bank(pipe, prompts, seeds=seed, steps=steps, guidance_scale=g, eta=eta,
                                 record_half=record_half, factors=factors, progress=progress, layer=layer)
            if cache is not None:
                cache.put_arrays("hbank", key, {"h": bank.h, "h_shape": np.asarray(bank.h_shape),
                                                "timesteps": bank.timesteps, "images": bank.images})
        judge = judge if judge is not None else default_judge()
        if judge is not None:
            bank.judged = judge.predict(bank.images)
        bank.key = key
        with _LOCK:
            _BANKS[key] = bank
            while len(_BANKS) > 4:
                _BANKS.popitem(last=False)
        return bank


def pooled(bank, step: int) -> np.ndarray:
    """(N, C) h at step `step`, averaged over its spatial positions."""
    T = bank.h.shape[1]
    if not 0 <= int(step) < T:
        raise InputError(f"step must be between 0 and {T - 1}, but is {step}")
    h = bank.h[:, int(step)].reshape((len(bank),) + tuple(bank.h_shape))
    return h.reshape(len(bank), h.shape[1], -1).mean(-1) if h.ndim > 2 else h


def bank_corpus(bank, step: int, *, name: str = "hspace") -> Corpus:
    import pandas as pd

    vectors = pooled(bank, step)
    meta = pd.DataFrame({"id": [f"h-{i}" for i in range(len(bank))], "prompt": bank.prompts, "seed": bank.seeds})
    if bank.factors is not None:
        for c in bank.factors.columns:
            meta[c] = bank.factors[c].astype(str).to_numpy()
    if bank.judged is not None:
        for c in ("shape", "colour", "size", "position"):
            if c in bank.judged.columns:
                meta[f"judged_{c}"] = bank.judged[c].astype(str).to_numpy()
    t = int(bank.timesteps[int(step)])
    return Corpus(name, vectors, meta, images=bank.images, texts=list(bank.prompts),
                  description=f"h-space: mid-block output of {len(bank)} generated Shapes samples at step {step} "
                              f"(t={t}) of {bank.h.shape[1]}, mean over positions ({vectors.shape[1]}-d)")


@register_corpus("hspace", "h-space of the Shapes generator: pooled UNet bottleneck of generated samples")
def load_hspace_corpus(n: int | None = None, *, step: int | None = None, seed: int = 0, steps: int = 10,
                       cache=None) -> Corpus:
    """h-space of the Shapes generator: pooled UNet bottleneck of generated samples.

    n samples (default DEFAULT_SAMPLES) from single-object test prompts; h (mid-block output) at
    `step` (default: the middle step) of `steps`, averaged over positions; coloured by prompt or the
    factors asked for (and the judge's reading, judged_*); thumbnails are the generated images.
    With `cache` (the app's disk cache) the samples are kept there for later starts.
    """
    bank = shapes_bank(None, n or DEFAULT_SAMPLES, seed=seed, steps=steps, cache=cache,
                       record_half=default_record_half())
    step = bank.h.shape[1] // 2 if step is None else int(step)
    return bank_corpus(bank, step)


def direction_axis(bank, direction, step: int) -> np.ndarray:
    """Each sample's coordinate along a direction at step `step`: (h − mean h)·v / σ, (N,)."""
    t = int(bank.timesteps[int(step)])
    v = direction.vectors[direction.index_for(t)]
    if len(v) != bank.h.shape[-1]:
        raise InputError(f"direction {direction.id!r} lives in another h-space")
    h = bank.h[:, int(step)]
    s = direction.sigma[direction.index_for(t)] or 1.0
    return ((h - h.mean(0)) @ v / s).astype(np.float32)


def trajectory(bank, item: int, basis: np.ndarray | None = None, step: int | None = None) -> np.ndarray:
    """Sample `item`'s pooled h at every step projected on `basis` (k, C) (default: the top-2 PCA
    axes of the pooled h at `step`): (T, k) — its denoising trajectory drawn on the same map."""
    from backends.generative.directions import pca

    if not 0 <= int(item) < len(bank):
        raise InputError(f"item {item} is outside this bank of {len(bank)} samples")
    T = bank.h.shape[1]
    step = T // 2 if step is None else int(step)
    if basis is None:
        basis, _, mean = pca(pooled(bank, step), 2)
    else:
        mean = pooled(bank, step).mean(0)
    pts = np.stack([pooled(bank, s)[int(item)] for s in range(T)])
    return ((pts - mean) @ np.asarray(basis).T).astype(np.float32)


def axis_function(bank, axis, step: int):
    """A map axis at step `step`: a Direction (coordinate (h − mean h)·v / σ) or an int k (the k-th
    principal axis of the pooled h). Returns f(h rows (M, D)) -> (M,) and a title."""
    from backends.generative.directions import pca

    step = int(step)
    C = int(bank.h_shape[0]) if len(bank.h_shape) > 1 else bank.h.shape[-1]

    def pool(rows):
        rows = np.asarray(rows, np.float32)
        return rows.reshape(len(rows), C, -1).mean(-1) if len(bank.h_shape) > 1 else rows

    if isinstance(axis, (int, np.integer)):
        basis, std, mean = pca(pooled(bank, step), max(2, int(axis) + 1))
        v, m, sd = basis[int(axis)], mean, float(std[int(axis)]) or 1.0
        return (lambda rows: ((pool(rows) - m) @ v / sd).astype(np.float32)), f"PCA {int(axis) + 1} of pooled h (σ)"
    t = int(bank.timesteps[step])
    v = axis.vectors[axis.index_for(t)]
    if len(v) != bank.h.shape[-1]:
        raise InputError(f"direction {axis.id!r} lives in another h-space")
    m = bank.h[:, step].mean(0)
    sd = float(axis.sigma[axis.index_for(t)]) or 1.0
    return (lambda rows: ((np.asarray(rows, np.float32) - m) @ v / sd).astype(np.float32)), f"{axis.name} (σ)"


def map_coordinates(bank, x_axis, y_axis, step: int, item: int | None = None):
    """(xy of the bank at `step` (N, 2), trajectory of `item` across all steps (T, 2) or None, titles)."""
    fx, tx = axis_function(bank, x_axis, step)
    fy, ty = axis_function(bank, y_axis, step)
    h = bank.h[:, int(step)]
    xy = np.stack([fx(h), fy(h)], 1)
    traj = None
    if item is not None:
        if not 0 <= int(item) < len(bank):
            raise InputError(f"item {item} is outside this bank of {len(bank)} samples")
        rows = bank.h[int(item)]
        traj = np.stack([fx(rows), fy(rows)], 1)
    return xy, traj, (tx, ty)
