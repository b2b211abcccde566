"""NoiseCLR (Dalva & Yanardag, CVPR 2024): directions in the text conditioning learned without labels.

K learnable direction tokens d_k live in the space of the text encoder's token states (the
conditioning the denoiser cross-attends to). c_k is the empty prompt's conditioning with d_k in
one token slot (the paper's prompt "<t_k>": the direction token alone). For images x0 noised to
x_t at a random t, the *edit noise* of direction k is e_k(x_t) = ε(x_t, c_k) − ε(x_t, c_∅); a
contrastive loss pulls e_k on different images together (positives) and pushes e_k away from
the other directions' e_l on the same image (negatives); only the tokens are trained::

    res = train_noiseclr(pipe, images, k=10, steps=150, batch_size=4, progress=print)
    dirs = to_directions(pipe, res)          # kind "text": sliders, strip and judge apply
    res.losses                               # one per step

The loss, per direction k (the paper's code, core/loss.py, with every direction as the anchor in
turn rather than one sampled anchor a step), cosine similarities of the flattened edit noises::

    pos_k = mean_{i<j} exp(cos(e_k(x_i), e_k(x_j)) / τ)      same direction, different images
    neg_k = mean_{i, l≠k} exp(cos(e_k(x_i), e_l(x_i)) / τ)   same image, other directions
    loss  = mean_k −log(pos_k / neg_k)                        τ = 0.5 (the paper's default)

Negatives are on the same image, as in the authors' implementation (the paper's text also
describes other images' edits as negatives). The model output is turned into ε by the
scheduler's prediction type, so ε-, x0- and v-predicting models share the code.
A learned direction is the shift c_k − c_∅ (token states and pooled vector), the form of the
"text" directions of ``backends.generative.directions``: strength 1 adds the direction token to
a prompt's conditioning (the UNet's cross-attention has no token positions, so the slot, the
last one, is only where it is stored).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError, number_between, whole_number

DEFAULT_TEMPERATURE = 0.5  # the paper's configs/base_config.py
MAX_K = 32
MAX_STEPS = 2000
MAX_BATCH = 16


@dataclass
class NoiseCLRResult:
    """tokens: float32 (K, D) learned direction tokens; slot: the token position they occupy;
    losses: the loss at each step; info: the settings and what stopped the run."""

    tokens: np.ndarray
    slot: int
    losses: list[float]
    seconds: float
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# 1. The loss

def contrastive_loss(edits, temperature: float = DEFAULT_TEMPERATURE):
    """NoiseCLR's loss of edit noises ``edits`` (K, B, ...) (direction k on image i), K ≥ 2, B ≥ 2.

    A torch scalar; differentiable in ``edits``. Perfectly aligned positives and orthogonal
    directions give the lowest value, −1/τ."""
    import torch

    if edits.ndim < 2 or edits.shape[0] < 2 or edits.shape[1] < 2:
        raise InputError(f"the loss needs at least 2 directions and 2 images, but edits have shape {tuple(edits.shape)}")
    k, b = edits.shape[:2]
    z = torch.nn.functional.normalize(edits.reshape(k, b, -1), dim=-1, eps=1e-20)
    # positives: same direction, different images (i < j)
    same_dir = torch.einsum("kid,kjd->kij", z, z)  # (K, B, B)
    upper = torch.ones(b, b, dtype=torch.bool, device=z.device).triu(1)
    pos = torch.exp(same_dir[:, upper] / temperature).mean(1)  # (K,)
    # negatives: same image, other directions
    same_img = torch.einsum("kid,lid->kli", z, z)  # (K, K, B)
    other = ~torch.eye(k, dtype=torch.bool, device=z.device)
    neg = torch.exp(same_img[other].reshape(k, k - 1, b) / temperature).mean((1, 2))  # (K,)
    return -(torch.log(pos) - torch.log(neg)).mean()


# ---------------------------------------------------------------------------------------
# 2. Conditioning from direction tokens, and the edit noise

def null_embeds(pipe):
    """The empty prompt's conditioning (one row), with no autograd history."""
    import torch

    with torch.inference_mode():
        null, _ = pipe.encode_prompt([""], do_classifier_free_guidance=False)
    from backends.generative.pipeline import PromptEmbeds

    return PromptEmbeds(null.states.clone(), null.mask.clone(), null.pooled.clone())


def _pools_states(null) -> bool:
    """Whether the pipeline's pooled vector is the mean of the token states (Shapes, SD 1.x/2.x)
    rather than an encoder's own (SDXL), read from the empty prompt."""
    from backends.generative.pipeline import pool_states

    if null.pooled.shape[-1] != null.states.shape[-1]:
        return False
    return bool((pool_states(null.states, null.mask) - null.pooled).abs().max() < 1e-4)


def direction_embeds(tokens, null, slot: int):
    """c_k for each token row of ``tokens`` (K, D): the empty prompt with d_k in token ``slot``."""
    import torch

    from backends.generative.pipeline import PromptEmbeds, pool_states

    k = tokens.shape[0]
    L = null.states.shape[1]
    at = torch.zeros(L, dtype=torch.bool, device=tokens.device)
    at[slot] = True
    states = torch.where(at[None, :, None], tokens[:, None, :].to(null.states), null.states.expand(k, -1, -1))
    mask = null.mask.expand(k, -1) | at[None]
    pooled = pool_states(states, mask) if _pools_states(null) else null.pooled.expand(k, -1)
    return PromptEmbeds(states, mask, pooled)


def _eps(pipe, out, x, t: int):
    from backends.generative.hspace import split_prediction

    alpha = float(pipe.scheduler.alphas_cumprod[int(t)])
    return split_prediction(out, x, alpha, pipe.scheduler.config.prediction_type, None)[1]


def edit_noise(pipe, tokens, x_t, t: int, null, slot: int, smap=None):
    """e_k(x_i) = ε(x_i, c_k) − ε(x_i, c_∅): (K, B, C, h, w), differentiable in ``tokens``."""
    import torch

    from backends.generative.pipeline import PromptEmbeds

    k, b = tokens.shape[0], x_t.shape[0]
    tt = torch.tensor(int(t), device=x_t.device)
    with torch.no_grad():
        nb = PromptEmbeds(null.states.expand(b, -1, -1), null.mask.expand(b, -1), null.pooled.expand(b, -1))
        e0 = _eps(pipe, pipe.predict(x_t, tt, nb, None, 1.0, smap), x_t, t)
    c = direction_embeds(tokens, null, slot)
    rows = PromptEmbeds(c.states.repeat_interleave(b, 0), c.mask.repeat_interleave(b, 0), c.pooled.repeat_interleave(b, 0))
    xk = x_t.repeat(k, 1, 1, 1)
    sk = None if smap is None else smap.repeat(k, 1, 1, 1)
    ek = _eps(pipe, pipe.predict(xk, tt, rows, None, 1.0, sk), xk, t)
    return ek.reshape((k, b) + tuple(x_t.shape[1:])) - e0[None]


def noised(pipe, x0, t: int, noise):
    """q(x_t | x0): √ᾱ_t x0 + √(1 − ᾱ_t) ε."""
    a = float(pipe.scheduler.alphas_cumprod[int(t)])
    return math.sqrt(a) * x0 + math.sqrt(1 - a) * noise


def loss_at(pipe, tokens, x0, t: int, noise, null, slot: int, *, temperature: float = DEFAULT_TEMPERATURE):
    """The loss of ``tokens`` on latents ``x0`` (B, C, h, w) noised at t with ``noise`` (a fixed
    evaluation when the arguments are fixed)."""
    smap = pipe.prepare_region_map(x0.shape[0])
    x_t = noised(pipe, x0, t, noise)
    return contrastive_loss(edit_noise(pipe, tokens, x_t, t, null, slot, smap), temperature)


# ---------------------------------------------------------------------------------------
# 3. Training

_int, _float = whole_number, number_between  # the bounds checks every service uses


def check_settings(k, steps, batch_size, temperature, lr) -> tuple[int, int, int, float, float]:
    return (_int(k, "k", 2, MAX_K), _int(steps, "steps", 1, MAX_STEPS), _int(batch_size, "batch_size", 2, MAX_BATCH),
            _float(temperature, "temperature", 0.01, 10.0), _float(lr, "lr", 1e-5, 1.0))


def image_latents(pipe, images):
    """uint8 images (N, H, W, 3) (any size: resized to the model's) -> latents (N, C, h, w)."""
    from backends.generative import hspace as hspace

    images, _ = hspace.fit_images(pipe, images)
    out = [hspace.encode(pipe, images[s: s + 32]).clone() for s in range(0, len(images), 32)]
    import torch

    return torch.cat(out).float()


def init_tokens(null, k: int, seed: int = 0):
    """(k random tokens (k, D) of the median norm of the empty prompt's token states, that norm)."""
    import torch

    on = null.states[0][null.mask[0]].float()
    norm = float(on.norm(dim=-1).median()) if len(on) else 1.0
    norm = norm if norm > 0 else 1.0
    init = torch.randn(int(k), null.states.shape[-1], generator=torch.Generator().manual_seed(int(seed)))
    return init / init.norm(dim=-1, keepdim=True) * norm, norm


def train_noiseclr(pipe, images, *, k: int = 10, steps: int = 150, batch_size: int = 4,
                   temperature: float = DEFAULT_TEMPERATURE, lr: float = 0.2, t_range=(0.0, 1.0),
                   seed: int = 0, max_seconds: float | None = None, progress=None) -> NoiseCLRResult:
    """Learn k direction tokens from unlabelled ``images`` (uint8 (N, H, W, 3), N ≥ batch_size).

    Each step: batch_size images at random, one random timestep t in ``t_range`` (fractions of the
    training timesteps) shared by the batch (as the paper), fresh noise, one UNet call for c_∅ and
    one for the k directions (k·batch_size rows), AdamW (weight decay 0.01, as the paper) on the
    tokens only; the denoiser is frozen (its parameters get no gradient). ``lr`` is relative to
    the RMS entry of a token state (the tokens start at a random direction of the typical state
    norm). Stops after ``steps`` or ``max_seconds``; ``progress(fraction, text)`` after each step.
    """
    import torch

    k, steps, batch_size, temperature, lr = check_settings(k, steps, batch_size, temperature, lr)
    images = np.asarray(images)
    if images.ndim != 4 or len(images) < batch_size:
        raise InputError(f"NoiseCLR needs at least batch_size={batch_size} images (N, H, W, 3), "
                         f"but has shape {images.shape}")
    lo, hi = float(t_range[0]), float(t_range[1])
    if not 0 <= lo < hi <= 1:
        raise InputError(f"t_range has to satisfy 0 ≤ start < end ≤ 1, but is ({lo}, {hi})")
    tell = progress or (lambda fraction, text: None)
    t0 = time.perf_counter()
    n_train = int(pipe.scheduler.config.num_train_timesteps)
    t_lo, t_hi = int(lo * (n_train - 1)), max(int(lo * (n_train - 1)) + 1, int(round(hi * (n_train - 1))))
    x0_all = image_latents(pipe, images).to(pipe.device, pipe.dtype)
    null = null_embeds(pipe)
    L, D = null.states.shape[1:]
    slot = L - 1
    init, norm = init_tokens(null, k, seed)
    tokens = torch.nn.Parameter(init.to(pipe.device, pipe.dtype))
    g = torch.Generator().manual_seed(int(seed) + 1)
    opt = torch.optim.AdamW([tokens], lr=lr * norm / math.sqrt(D), weight_decay=1e-2)
    frozen = [(p, p.requires_grad) for p in pipe.unet.parameters()]
    losses, stopped = [], "steps"
    lock = getattr(pipe, "_lock", None)
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        for step in range(steps):
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                stopped = "max_seconds"
                break
            idx = torch.randperm(len(x0_all), generator=g)[:batch_size]
            t = int(torch.randint(t_lo, t_hi + 1, (1,), generator=g))
            noise = torch.randn(x0_all[idx].shape, generator=g).to(x0_all)
            if lock is not None:
                lock.acquire()
            try:
                loss = loss_at(pipe, tokens, x0_all[idx], t, noise, null, slot, temperature=temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                pipe.cfg_halves = None
            finally:
                if lock is not None:
                    lock.release()
            opt.step()
            losses.append(float(loss.detach()))
            tell((step + 1) / steps, f"NoiseCLR step {step + 1}/{steps}: loss {losses[-1]:.3f}")
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    if not losses:
        raise InputError("NoiseCLR ran out of time before its first step; raise max_seconds")
    info = {"k": k, "steps": len(losses), "batch_size": batch_size, "temperature": temperature, "lr": lr,
            "t_range": [lo, hi], "seed": int(seed), "n_images": int(len(images)), "stopped_by": stopped}
    return NoiseCLRResult(tokens.detach().float().cpu().numpy(), slot, losses, time.perf_counter() - t0, info)


# ---------------------------------------------------------------------------------------
# 4. As library directions, and their footprint in h

def to_directions(pipe, result: NoiseCLRResult, *, prefix: str = "noiseclr") -> list:
    """Each learned token as a Direction of kind "text": c_k − c_∅ (token states, pooled), strength 1."""
    import torch

    from backends.generative.directions import Direction

    null = null_embeds(pipe)
    with torch.no_grad():
        c = direction_embeds(torch.from_numpy(result.tokens).to(null.states), null, result.slot)
        ds = (c.states - null.states).float().cpu()
        dp = (c.pooled - null.pooled).float().cpu()[:, None]
        if dp.shape[-1] != ds.shape[-1]:  # SDXL: its pooled vector (another width) is not the tokens' mean
            dp = torch.zeros_like(ds[:, :1])
    v = torch.cat([ds, dp], 1).numpy()  # (K, L + 1, D)
    losses = result.losses
    tail = losses[-max(1, len(losses) // 10):]
    meta = {**result.info, "method": "noiseclr", "final_loss": round(float(np.mean(tail)), 4),
            "first_loss": round(float(losses[0]), 4), "seconds": round(result.seconds, 1)}
    return [Direction(f"{prefix}-{j + 1}", f"NoiseCLR {j + 1}", "text", v[j].reshape(1, -1), np.array([-1]), np.ones(1),
                      v.shape[1:], 1.0, {**meta, "index": j + 1}) for j in range(len(v))]


def induced_h_directions(pipe, directions: list, images, step_t: int, *, layer: str = "mid_block",
                         seed: int = 0, max_images: int = 32) -> np.ndarray:
    """The h-space footprint of text directions, for scoring them beside h-space families:
    v_k = mean over images of h(x_t, c_∅ + δ_k) − h(x_t, c_∅) at timestep ``step_t`` (images noised
    by q(x_t | x0)), unit rows (K, D) (zero rows where a direction moves nothing)."""
    import torch

    from backends.generative import hspace as hspace
    from backends.generative.directions import text_cond_delta

    images = np.asarray(images)[:max_images]
    x0 = image_latents(pipe, images).to(pipe.device, pipe.dtype)
    g = torch.Generator().manual_seed(int(seed))
    x_t = noised(pipe, x0, step_t, torch.randn(x0.shape, generator=g).to(x0))
    b = len(x0)
    null = null_embeds(pipe)
    base = hspace.Conditioning(type(null)(null.states.expand(b, -1, -1), null.mask.expand(b, -1),
                                          null.pooled.expand(b, -1)), None, pipe.prepare_region_map(b), 1.0)
    tt = torch.tensor(int(step_t))
    out = []
    with hspace.HSpaceHook(pipe, record_half="cond", layer=layer) as hook, torch.inference_mode():
        hs: list = []
        hook.record = hs
        hspace._predict(pipe, x_t, tt, base)
        h0 = hs.pop().flatten(1)
        for d in directions:
            c = text_cond_delta([d], [1.0])(base)
            hspace._predict(pipe, x_t, tt, c)
            v = (hs.pop().flatten(1) - h0).mean(0).double()
            n = float(v.norm())
            out.append((v / n if n > 0 else v).float().cpu().numpy())
    return np.stack(out)


__all__ = ["NoiseCLRResult", "contrastive_loss", "null_embeds", "direction_embeds", "edit_noise", "noised", "loss_at",
           "init_tokens", "train_noiseclr", "to_directions", "induced_h_directions", "image_latents", "check_settings",
           "DEFAULT_TEMPERATURE"]
