"""Colour twins of one-object Shapes scenes, and the h-swap loss that trains the decoder to take colour from h.

Why: the Directions tab's supervised colour direction moves h, but on the generator trained with the plain
loss the decoder takes the object's colour mostly from the partly denoised image through the skip
connections, so no direction in h turns an object blue (docs/directions.md). The h-swap loss pairs a scene
with its twin in another colour (same layout, noise and timestep), runs the UNet on both, swaps their h
(the mid block's output) and asks each for its *twin's* image: the decoder sees the skips of a red object
and the h of the blue one, and has to draw it blue.

A twin is exact: Shapes renders are coverage-weighted, so a pixel is bg + α·(colour − bg), and the twin
pixel is bg + α·(colour' − bg) with the same α; its caption names the new colour with a synonym at the
same place in the old colour's word list.
"""
from __future__ import annotations

import re

import numpy as np

from backends.shapes.scenes import BACKGROUNDS, COLOUR_WORDS, COLOURS

_BG_RGB = np.asarray(list(BACKGROUNDS.values()), np.float32)  # by the cached scenes' background index
# every colour word, longest first (so "royal blue" wins over "blue"), with its colour and place in the list
_WORDS = sorted(((w, c, i) for c, ws in COLOUR_WORDS.items() for i, w in enumerate(ws)), key=lambda t: -len(t[0]))
_WORD_RE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w, _, _ in _WORDS) + r")(?![\w-])")
_WORD_INFO = {w: (c, i) for w, c, i in _WORDS}


def object_colour(caption: str) -> str | None:
    """The colour a one-object caption names (None if it names none, or more than one)."""
    found = {_WORD_INFO[m.group(1)][0] for m in _WORD_RE.finditer(caption)}
    return found.pop() if len(found) == 1 else None


def recolour_caption(caption: str, new: str) -> str:
    """The caption with its colour word replaced by `new`'s word at the same place in its list."""
    def sub(m):
        _, i = _WORD_INFO[m.group(1)]
        words = COLOUR_WORDS[new]
        return words[min(i, len(words) - 1)]

    return _WORD_RE.sub(sub, caption)


def recolour_image(img: np.ndarray, bg: int, old: str, new: str) -> np.ndarray:
    """uint8 (H, W, 3) of one object in colour `old` on background index `bg` -> the same in `new`."""
    b = _BG_RGB[bg]
    c0 = np.asarray(COLOURS[old], np.float32) - b
    c1 = np.asarray(COLOURS[new], np.float32) - b
    alpha = np.clip(((img.astype(np.float32) - b) @ c0) / float(c0 @ c0), 0.0, 1.0)
    return np.clip(np.round(b + alpha[..., None] * c1), 0, 255).astype(np.uint8)


def colour_twins(images: np.ndarray, captions, bgs: np.ndarray, rng: np.random.Generator):
    """Twins of one-object scenes in another colour (drawn at random): (images, captions, ok), where
    ok marks the scenes that got one (a caption naming exactly one colour)."""
    out = images.copy()
    caps = list(captions)
    ok = np.zeros(len(caps), bool)
    names = list(COLOURS)
    for k, cap in enumerate(caps):
        old = object_colour(str(cap))
        if old is None:
            continue
        new = names[(names.index(old) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
        out[k] = recolour_image(images[k], int(bgs[k]), old, new)
        caps[k] = recolour_caption(str(cap), new)
        ok[k] = True
    return out, caps, ok


def swap_h_loss(gen, sched_alphas, a_images, b_images, a_states, a_mask, b_states, b_mask, rng: np.random.Generator, *,
                snr_clip=(1.0, 5.0), t_focus=None):
    """The h-swap loss on K twin pairs: the UNet runs on [x_t(A); x_t(B)] (same noise and timestep, no region
    map), the mid block's outputs of each pair are swapped, and row A is asked for B's image (and B for A's).
    Returns (loss tensor, info dict)."""
    import torch

    from backends.shapes.generator import pool_states

    cfg = gen.config
    dev = next(gen.unet.parameters()).device
    k = len(a_images)
    x0 = gen.codec.encode(gen.codec.images_to_tensor(np.concatenate([a_images, b_images])).to(dev))
    t = rng.integers(0, cfg.num_train_timesteps, size=k)
    if t_focus is not None:
        lo, hi, p = t_focus
        t = np.where(rng.random(k) < p, rng.integers(int(lo), int(hi), size=k), t)
    t = torch.from_numpy(np.concatenate([t, t])).long().to(dev)
    ab = sched_alphas[t].view(2 * k, 1, 1, 1)
    noise = torch.from_numpy(rng.standard_normal((k, *x0.shape[1:])).astype(np.float32)).to(dev)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.cat([noise, noise])
    states = torch.cat([torch.as_tensor(a_states), torch.as_tensor(b_states)]).to(dev).float()
    mask = torch.cat([torch.as_tensor(a_mask), torch.as_tensor(b_mask)]).to(dev)
    ls = cfg.latent_size
    smap = gen.spatext(xt.new_zeros((2 * k, 3, ls, ls)), xt.new_zeros((2 * k, 3, states.shape[-1])), ls)  # no regions
    kw = {"class_labels": pool_states(states, mask)} if cfg.pooled_conditioning else {}

    def swap(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = torch.cat([h[k:], h[:k]])
        return (h, *output[1:]) if isinstance(output, tuple) else h

    handle = gen.unet.mid_block.register_forward_hook(swap)
    try:
        pred = gen.unet(torch.cat([xt, smap], 1), t, states, encoder_attention_mask=mask, **kw).sample.float()
    finally:
        handle.remove()
    target = torch.cat([x0[k:], x0[:k]])
    snr = ab / (1 - ab)
    w = snr.clamp(*snr_clip).view(2 * k)
    per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    return (w * per).mean(), {"mse_swap": float(per.detach().mean())}
