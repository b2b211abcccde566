"""Gradient failure searches (SAGE's own method, Liu et al.): backpropagate a surrogate's
differentiable score through the whole sampler to the generator's inputs, and step them towards
images the surrogate says do not show what was asked.

    result = gradient_search(generator, surrogate, family, budget=60, kind="token-gradient", seed=0)

- "token-gradient": K learnable token states appended to the prompt's own token states (in the
  conditioning space the UNet cross-attends to; the prompt's words are never touched). They start
  at the prompt's mean token state (plus a little noise so the K differ) and stay within a ball
  around that start, of radius `token_radius` times the prompt's RMS token norm, per token.
- "latent-gradient": the initial noise z0 + d, with ||d|| <= `latent_radius` * sqrt(dim), rescaled to
  the norm of z0, so it stays on the shell where N(0, I) draws lie (not an outlier: SAGE's concern).

What is needed: generator.sample_differentiable(prompts, latents tensor, seeds, tokens) -> float
images (N, 3, H, W) in [0, 1] with the graph kept, generator.token_space(prompts) -> (mean token
state (N, D), RMS token norm (N,)) (``PipelineGenerator`` has both), and surrogate.log_agreement(
images, asked) -> (N,) tensor (the log-probability of what was asked; ``Scores`` still decide what
failed, from the uint8 images, exactly as for the other searches); a surrogate whose score is
differentiable only with some parts may say why not up front (``not_differentiable() -> str | None``).

Budget: every image the sampler makes is judged and counts, so a search makes exactly `budget`
images, as the sampled searches do; `grad_steps` caps the backward passes (one per batch). The
search keeps `batch` starts at a time: each start (fresh asked factors, wording and noise, as a
random trial) is judged, then moved by one normalised gradient step of `step_size` times its
ball's radius, judged again, ... until it fails (it is then retired: going on would find the same
failure again) or has had `steps_per_start` steps; a retired start is replaced by a fresh one. The
last batch gets no backward pass (no image would show its effect), and once `grad_steps` are spent
the rest of the budget is random sampling.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from backends.errors import InputError

GRADIENT_KINDS = ("token-gradient", "latent-gradient")


@dataclass
class _Start:
    trial_args: tuple  # (prompt, asked, lineage, wording, synonyms)
    z0: object  # (C, h, w) tensor
    init: object  # token-gradient: (K, D) start tokens; latent-gradient: None
    radius: float
    delta: object  # tensor, shape of the optimised thing
    steps: int = 0


def check_gradient_args(n_tokens, token_radius, latent_radius, step_size, steps_per_start, grad_steps) -> None:
    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or not 1 <= n_tokens <= 16:
        raise InputError(f"n_tokens must be a whole number between 1 and 16, but is {n_tokens!r}")
    for name, v in (("token_radius", token_radius), ("latent_radius", latent_radius), ("step_size", step_size)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (0 < float(v) <= 4):
            raise InputError(f"{name} must be a number in (0, 4], but is {v!r}")
    if isinstance(steps_per_start, bool) or not isinstance(steps_per_start, (int, np.integer)) or steps_per_start < 1:
        raise InputError(f"steps_per_start must be a whole number of at least 1, but is {steps_per_start!r}")
    if grad_steps is not None and (isinstance(grad_steps, bool) or not isinstance(grad_steps, (int, np.integer))
                                   or grad_steps < 0):
        raise InputError(f"grad_steps must be a whole number of at least 0 (or None), but is {grad_steps!r}")


def gradient_search(generator, surrogate, family, *, budget: int, kind: str, seed: int = 0, batch: int = 8,
                    grad_steps: int | None = None, steps_per_start: int = 4, n_tokens: int = 2,
                    token_radius: float = 1.0, latent_radius: float = 0.5, step_size: float = 0.5,
                    strength: float = 0.5, progress: Callable[[float, str], None] | None = None):
    """Spend exactly `budget` generated images and at most `grad_steps` backward passes (None: as many
    as the images allow) on a gradient search of `kind` (see the module's docstring)."""
    import torch

    from backends.generative.failure_search import SearchResult, Trial, latent_for

    if kind not in GRADIENT_KINDS:
        raise InputError(f"gradient search kind must be one of {', '.join(GRADIENT_KINDS)}, but is {kind!r}")
    check_gradient_args(n_tokens, token_radius, latent_radius, step_size, steps_per_start, grad_steps)
    for need, who, what in (("sample_differentiable", generator, "generator"), ("token_space", generator, "generator"),
                            ("log_agreement", surrogate, "surrogate")):
        if not callable(getattr(who, need, None)):
            raise InputError(f"the {kind} search needs a {what} with a differentiable path ({need}); "
                             f"this {type(who).__name__} has none")
    why = getattr(surrogate, "not_differentiable", lambda: None)()
    if why:  # refused before any image is made
        raise InputError(why)
    rng = np.random.default_rng(seed)
    tgen = torch.Generator().manual_seed(int(seed))
    tell = progress or (lambda f, text: None)
    shape = tuple(generator.latent_shape)
    max_grads = math.inf if grad_steps is None else int(grad_steps)
    trials: list[Trial] = []
    starts: list[_Start] = []
    grads_used = 0

    def fresh_batch(n: int) -> list[_Start]:
        args = []
        for _ in range(n):
            asked = family.sample_asked(rng)
            syn = {k: int(rng.integers(len(family.slots[k][v]))) for k, v in asked.items()}
            args.append((family.render(asked, synonyms=syn), asked, (int(rng.integers(2 ** 31)),), (0, 0, 0, 0), syn))
        z0 = [torch.from_numpy(latent_for(a[2], shape, strength)) for a in args]
        if kind == "latent-gradient":
            r = latent_radius * math.sqrt(float(np.prod(shape)))
            return [_Start(a, z, None, r, torch.zeros(shape)) for a, z in zip(args, z0)]
        mean, rms = generator.token_space([a[0] for a in args])
        out = []
        for i, a in enumerate(args):
            jitter = 0.05 * float(rms[i]) / math.sqrt(mean.shape[1]) * torch.randn(n_tokens, mean.shape[1], generator=tgen)
            init = mean[i].float()[None].repeat(n_tokens, 1) + jitter
            out.append(_Start(a, z0[i], init, token_radius * float(rms[i]), torch.zeros_like(init)))
        return out

    def inputs(todo: list[_Start], delta):
        z0 = torch.stack([s.z0 for s in todo])
        if kind == "latent-gradient":
            z = z0 + delta
            z = z * (z0.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp(min=1e-12)).view(-1, *[1] * len(shape))
            return z, None
        return z0, torch.stack([s.init for s in todo]) + delta

    while len(trials) < budget:
        n = min(batch, budget - len(trials))
        starts = starts[:n]
        if len(starts) < n:
            starts += fresh_batch(n - len(starts))
        backward = grads_used < max_grads and len(trials) + n < budget
        delta = torch.stack([s.delta for s in starts]).requires_grad_(backward)
        with torch.enable_grad() if backward else torch.no_grad():
            z, tokens = inputs(starts, delta)
            images = generator.sample_differentiable([s.trial_args[0] for s in starts], z,
                                                     [s.trial_args[2][0] for s in starts], tokens)
        if images.shape[0] != n:
            raise ValueError(f"the generator returned {images.shape[0]} images for {n} prompts")
        u8 = (images.detach().permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        asked = [s.trial_args[1] for s in starts]
        sc = surrogate.score(u8, asked)
        todo = []
        for i, s in enumerate(starts):
            prompt, a, lineage, wording, syn = s.trial_args
            # a token start already has its (unlearned) tokens appended: not quite a random trial
            origin = "gradient" if s.steps else ("random" if kind == "latent-gradient" else "start")
            t = Trial(prompt, a, lineage, wording, origin, syn, steps=s.steps)
            t.agreement, t.drawn, t.failed = float(sc.agreement[i]), str(sc.drawn[i]), bool(sc.failed[i])
            t.image = u8[i]
            t.features = None if sc.features is None else np.asarray(sc.features[i], np.float32)
            todo.append(t)
        trials += todo
        if backward:
            loss = surrogate.log_agreement(images, asked)
            (g,) = torch.autograd.grad(loss.sum(), [delta])
            grads_used += 1
            with torch.no_grad():
                for i, s in enumerate(starts):
                    gi = g[i]
                    norm = float(gi.norm())
                    if norm > 0 and math.isfinite(norm):
                        s.delta = _project(s.delta - step_size * s.radius * gi / norm, s.radius, kind)
                    s.steps += 1
        starts = [s for s, t in zip(starts, todo) if backward and not t.failed and s.steps < steps_per_start]
        tell(len(trials) / budget, f"{len(trials)}/{budget} images, {grads_used} gradient steps, "
                                   f"{sum(t.failed for t in trials)} failures")
    fails = sum(t.failed for t in trials)
    notes = [f"{kind} search: {len(trials)} images, {grads_used} gradient steps, {fails} failures "
             f"({fails / max(1, len(trials)):.0%})"]
    return SearchResult(kind, family.name, budget, trials, notes, gradient_steps=grads_used)


def _project(delta, radius: float, kind: str):
    """Back into the ball: the whole latent offset, or each token's offset on its own."""
    import torch

    if kind == "latent-gradient":
        n = float(delta.norm())
        return delta * (radius / n) if n > radius else delta
    n = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(radius / n.clamp(min=1e-12), max=1.0)


__all__ = ["GRADIENT_KINDS", "check_gradient_args", "gradient_search"]
