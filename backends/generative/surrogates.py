"""What the failure search (backends/generative/failure_search.py) runs and judges with, for any model.

- ``PipelineGenerator(pipe)``: a LatentDiffusionPipeline as the search's generator: prompts, initial
  latents and one seed per image (the sampler's own noise, DDIM with eta > 0) -> uint8 images. For
  the gradient searches it also samples with the autograd graph kept (``sample_differentiable``:
  the same DDIM run, the same sampler noise, so the same image, with learnable tokens appended to
  the prompt's token states; torch.utils.checkpoint per step for large latents).
- ``EncoderSurrogate(encoder, vocabulary)``: the surrogate for real models (SAGE uses image
  classifiers): zero-shot classification by an aligned image-text encoder (OpenCLIP's
  encode_images / encode_texts): agreement = the softmax share of the asked value among the
  vocabulary's "a photo of a {value}" texts, drawn = the most similar value. Its differentiable
  score (``log_agreement``) needs the encoder's ``encode_images_tensor`` (OpenCLIP has it).
- ``OBJECT_FAMILY``: the prompt family it is meant for ("a photo of a {object}", common objects).

A world with a judge of its own (Shapes: backends/shapes/failures.py) registers a surrogate and its
families with ``backends.plugins.register_surrogate``.
"""
from __future__ import annotations

import numpy as np

from backends.generative.failure_search import PromptFamily, Scores

OBJECTS = ("dog", "cat", "car", "bicycle", "bird", "horse", "chair", "cup", "clock", "apple", "boat", "house")
OBJECT_FAMILY = PromptFamily("a photo of a {object}", {"object": {o: [o] for o in OBJECTS}},
                             templates=("a photo of a {object}", "a {object}", "a picture showing a {object}"),
                             prefixes=("", "high quality", "a photograph:"), fillers=("", "nice", "typical", "single"))


class PipelineGenerator:
    """A LatentDiffusionPipeline as the failure search's generator (batches of at most 64)."""

    def __init__(self, pipe, *, steps: int | None = None, guidance: float | None = None, method: str | None = None,
                 checkpoint: bool | None = None):
        self.pipe = pipe
        self.steps, self.guidance, self.method = steps, guidance, method
        self.checkpoint = checkpoint  # for sample_differentiable (None: by the latent's size)
        self.latent_shape = (pipe.latent_channels, pipe.latent_size, pipe.latent_size)
        self.calls = 0  # images generated

    def __call__(self, prompts, latents, seeds) -> np.ndarray:
        import torch

        from backends.generative.pipeline import to_uint8

        out = self.pipe(list(prompts), latents=torch.from_numpy(np.ascontiguousarray(latents, np.float32)),
                        generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
                        guidance_scale=self.guidance, num_inference_steps=self.steps, guidance_method=self.method)
        self.calls += len(prompts)
        return to_uint8(out.images)

    def _settings(self):
        pipe = self.pipe
        steps = pipe.default_steps if self.steps is None else int(self.steps)
        guidance = pipe.default_guidance_scale if self.guidance is None else float(self.guidance)
        return steps, guidance, pipe.resolve_guidance_method(self.method)

    def token_space(self, prompts):
        """For appended tokens: (each prompt's mean token state (N, D), the RMS norm of its token
        states (N,)), over its mask, as float32 tensors without a graph."""
        import torch

        with torch.no_grad():
            cond, _ = self.pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False)
            m = cond.mask.float().unsqueeze(-1)
            states = cond.states.float() * m
            n = m.sum(1).clamp(min=1.0)
            mean = states.sum(1) / n
            rms = (states.pow(2).sum(-1, keepdim=True).sum(1) / n).sqrt().squeeze(-1)
        return mean.clone(), rms.clone()

    def sample_differentiable(self, prompts, latents, seeds, tokens=None, *, checkpoint: bool | None = None):
        """The images of ``__call__`` (same steps, guidance, sampler noise), as a float tensor (N, 3, H, W)
        in [0, 1] with the autograd graph to `latents` (a tensor) and `tokens` ((N, K, D) appended to
        each prompt's token states, or None). The model's weights get no gradients (only what is asked
        for is differentiated: use torch.autograd.grad). checkpoint: recompute each DDIM step in the
        backward pass instead of keeping its activations (None: when a latent has over 8,192 values)."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor
        from torch.utils.checkpoint import checkpoint as ckpt

        from backends.generative.pipeline import _step_params

        pipe = self.pipe
        steps, guidance, method = self._settings()
        do_cfg = guidance > 1.0 and method == "cfg"
        eta = float(pipe.default_eta)
        prompts = list(prompts)
        z = torch.as_tensor(latents).to(pipe.device, pipe.dtype)
        if checkpoint is None:
            checkpoint = self.checkpoint if self.checkpoint is not None else z[0].numel() > 8192
        if tokens is not None:
            tokens = torch.as_tensor(tokens).to(pipe.device, pipe.dtype)
        with pipe._lock:
            cond, uncond = pipe.encode_prompt(prompts, do_classifier_free_guidance=do_cfg, extra_tokens=tokens)
            smap = pipe.prepare_region_map(len(prompts))
            pipe.scheduler.set_timesteps(steps, device=pipe.device)
            timesteps = list(pipe.scheduler.timesteps)
            gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
            noisy = eta > 0 and "variance_noise" in _step_params(pipe.scheduler)
            # the sampler noise the pipeline's own loop would draw, drawn once (a recomputed step sees the same)
            noise = [randn_tensor(z.shape, generator=gens, device=pipe.device, dtype=pipe.dtype) if noisy else None
                     for _ in timesteps]

            def step(lat, t, eps):
                out = pipe.predict(lat, t, cond, uncond, guidance, smap, method=method)
                kw = {"eta": eta, "variance_noise": eps} if noisy else {}
                return pipe.scheduler.step(out, t, lat, **kw).prev_sample

            lat = z * pipe.scheduler.init_noise_sigma
            for t, eps in zip(timesteps, noise):
                lat = ckpt(step, lat, t, eps, use_reentrant=False) if checkpoint else step(lat, t, eps)
            pipe.cfg_halves = None
            decode = getattr(pipe.codec, "decode_differentiable", pipe.codec.decode)
            images = (decode(lat / pipe.codec.config.scaling_factor).float() / 2 + 0.5).clamp(0, 1)
        self.calls += len(prompts)
        return images


class EncoderSurrogate:
    """Zero-shot agreement from an aligned image-text encoder (see the module's docstring)."""

    def __init__(self, encoder, vocabulary: dict[str, tuple[str, ...]] | None = None,
                 template: str = "a photo of a {}", temperature: float = 100.0):
        self.encoder = encoder
        self.vocabulary = {k: tuple(v) for k, v in (vocabulary or {"object": OBJECTS}).items()}
        self.template, self.temperature = template, float(temperature)
        self._texts: dict[str, np.ndarray] = {}

    def families(self) -> dict[str, PromptFamily]:
        return {OBJECT_FAMILY.name: OBJECT_FAMILY}

    def _text(self, factor: str) -> np.ndarray:
        if factor not in self._texts:
            t = np.asarray(self.encoder.encode_texts([self.template.format(v) for v in self.vocabulary[factor]]))
            self._texts[factor] = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        return self._texts[factor]

    def score(self, images, asked: list[dict]) -> Scores:
        x = np.asarray(self.encoder.encode_images(np.asarray(images)), np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        agree = np.ones(len(x))
        failed = np.zeros(len(x), bool)
        drawn = [[] for _ in range(len(x))]
        feats = []
        for factor, values in self.vocabulary.items():
            logits = self.temperature * x @ self._text(factor).T
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            feats.append(p)
            for i, a in enumerate(asked):
                best = values[int(p[i].argmax())]
                drawn[i].append(best)
                if factor in a:
                    agree[i] = min(agree[i], float(p[i, values.index(a[factor])]) if a[factor] in values else 0.0)
                    failed[i] |= best != a[factor]
        return Scores(agree, [" ".join(d) for d in drawn], failed, np.concatenate(feats, 1).astype(np.float32))

    def not_differentiable(self) -> str | None:
        """Why log_agreement cannot run with this encoder, or None."""
        if getattr(self.encoder, "encode_images_tensor", None) is None:
            return ("the gradient failure searches need an image encoder with a differentiable image tower "
                    "(encode_images_tensor; OpenCLIP's has one)")
        return None

    def log_agreement(self, images, asked: list[dict]):
        """The differentiable score of the gradient searches: per image, the sum over asked factors of
        the log-softmax share of the asked value (images: float tensor (N, 3, H, W) in [0, 1]); the
        search lowers it. Needs the encoder's ``encode_images_tensor`` (a differentiable image tower)."""
        import torch

        from backends.errors import InputError

        why = self.not_differentiable()
        if why:
            raise InputError(why)
        enc = self.encoder.encode_images_tensor
        x = torch.nn.functional.normalize(enc(images).float(), dim=-1)
        total = x.new_zeros(len(x))
        for factor, values in self.vocabulary.items():
            text = torch.as_tensor(self._text(factor), dtype=x.dtype, device=x.device)
            logp = torch.log_softmax(self.temperature * x @ text.T, -1)
            rows = [i for i, a in enumerate(asked) if a.get(factor) in values]
            if rows:
                cols = [values.index(asked[i][factor]) for i in rows]
                total = total.index_add(0, torch.tensor(rows, device=x.device), logp[rows, cols])
        return total


def surrogate_for(backends):
    """(families {name: PromptFamily}, load() -> surrogate) for the active generator: its world's
    registered surrogate for a world's own generator (Shapes: the factor judge), else the active image
    encoder's text-image similarity (--encoder; OpenCLIP for real models). Families need no weights."""
    from backends.errors import InputError
    from backends.plugins import get_surrogate

    spec = backends.generator_spec()
    plugin = get_surrogate(spec.kind) if spec.kind != "diffusers" else None
    if plugin is not None:
        def load():
            s = plugin.load()
            if s is None:
                raise InputError(f"the {plugin.name} failure-search surrogate has no weights here "
                                 "(train the judge with `python -m backends.shapes.train judge`)")
            return s
        return plugin.families(), load

    def load_encoder():
        enc = backends.image_encoder()
        if enc is None or not hasattr(enc, "encode_texts"):
            raise InputError("the failure search on this generator needs an image encoder with a text tower "
                             "(--encoder openclip:...)")
        return EncoderSurrogate(enc)
    return {OBJECT_FAMILY.name: OBJECT_FAMILY}, load_encoder


__all__ = ["OBJECTS", "OBJECT_FAMILY", "EncoderSurrogate", "PipelineGenerator", "surrogate_for"]
