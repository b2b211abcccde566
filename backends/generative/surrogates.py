"""What the failure search (backends/generative/failure_search.py) runs and judges with, for any model.

- ``PipelineGenerator(pipe)``: a LatentDiffusionPipeline as the search's generator: prompts, initial
  latents and one seed per image (the sampler's own noise, DDIM with eta > 0) -> uint8 images.
- ``EncoderSurrogate(encoder, vocabulary)``: the surrogate for real models (SAGE uses image
  classifiers): zero-shot classification by an aligned image-text encoder (OpenCLIP's
  encode_images / encode_texts): agreement = the softmax share of the asked value among the
  vocabulary's "a photo of a {value}" texts, drawn = the most similar value.
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

    def __init__(self, pipe, *, steps: int | None = None, guidance: float | None = None, method: str | None = None):
        self.pipe = pipe
        self.steps, self.guidance, self.method = steps, guidance, method
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
