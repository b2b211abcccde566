"""Stable Diffusion (and other diffusers text-to-image models) behind ``LatentDiffusionPipeline``.

Every tab talks to one pipeline surface (``backends.generative.pipeline.LatentDiffusionPipeline``: prompt,
negative prompt, guidance, steps, generator, latents, step callback, ``predict`` for the h-space
and region code). This module adapts a diffusers model folder (SD 1.5, SD 2.1-base, SD-Turbo,
SDXL-Turbo, a hub id in the local cache, or a local directory) to it:

- ``VaeCodec``: ``AutoencoderKL`` in the codec slot (``encode`` -> latent mean, ``decode`` ->
  image tensor), kept in float32 (SDXL's VAE overflows in fp16), with the down-sampling factor
  as ``config.patch`` so image sizes are computed the same way as for the Shapes codec;
- ``HFPromptEncoder``: one or two CLIP text encoders (SDXL concatenates the penultimate hidden
  states of both and conditions on the second one's projected pooled vector);
- the model's scheduler is replaced by ``DDIMScheduler`` with the same betas and prediction type
  ("trailing" spacing, as SD-Turbo wants), since the h-space and inversion code do DDIM updates.

    pipe = load_diffusers_pipeline("sd-turbo", device="cuda")      # LatentDiffusionPipeline
    pipe("a red fox in the snow").images

Loading never downloads unless ``download=True`` (the app's ``--download``): a model missing from
the local Hugging Face cache raises ``ModelUnavailable`` at once, with the command that fetches it.
Only safetensors weights are read.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backends.errors import InputError

# Short names for the models the README documents (base 512x512 variants: they run on smaller GPUs).
ALIASES = {
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1-base",
    "sd-turbo": "stabilityai/sd-turbo",
    "sdxl-turbo": "stabilityai/sdxl-turbo",
}
# Sampling defaults per model family (turbo models are distilled for 1-4 steps without guidance).
DEFAULTS = {
    "sd15": dict(guidance_scale=7.5, steps=25),
    "sd21": dict(guidance_scale=7.5, steps=25),
    "sd-turbo": dict(guidance_scale=0.0, steps=2),
    "sdxl-turbo": dict(guidance_scale=0.0, steps=2),
}
GENERATOR_CHOICES = ("shapes",) + tuple(ALIASES)


def sampling_defaults(spec: GeneratorSpec) -> tuple[int, float]:
    """(steps, guidance scale) a generator is meant to be sampled with (no weights loaded)."""
    if spec.kind == "shapes":
        from backends.plugins import get_generator

        d = get_generator("shapes").defaults()
        return d["steps"], d["guidance_scale"]
    d = DEFAULTS.get(spec.alias, DEFAULTS["sd-turbo"] if "turbo" in spec.source.lower() else DEFAULTS["sd15"])
    return d["steps"], d["guidance_scale"]


def guidance_methods(spec: GeneratorSpec) -> list[str]:
    """The guidance methods a generator offers ("auto", "cfg"), its default first (no weights
    loaded): autoguidance needs a guide model, which only the Shapes generator ships."""
    if spec.kind == "shapes":
        from backends.plugins import get_generator

        return list(get_generator("shapes").defaults()["guidance_methods"])
    return ["cfg"]


class ModelUnavailable(InputError):
    """A model that cannot be loaded here (not in the cache, no GPU, unsupported files)."""


@dataclass(frozen=True)
class GeneratorSpec:
    """What ``--generator`` names: kind "shapes" or "diffusers" (source: hub id or local dir)."""

    kind: str
    source: str = ""
    alias: str = ""

    @property
    def label(self) -> str:
        return self.alias or self.source or self.kind


def parse_generator_spec(spec: str | None) -> GeneratorSpec:
    """'shapes' | 'sd15' | 'sd21' | 'sd-turbo' | 'sdxl-turbo' | '<owner>/<name>' | '<local dir>'."""
    s = (spec or "shapes").strip()
    if s == "" or s == "shapes":
        return GeneratorSpec("shapes")
    if s in ALIASES:
        return GeneratorSpec("diffusers", ALIASES[s], alias=s)
    p = Path(s).expanduser()
    if p.is_dir():
        if not (p / "model_index.json").exists():
            raise ModelUnavailable(f"generator directory {s!r} has no model_index.json (a diffusers pipeline folder, "
                                   "as written by DiffusionPipeline.save_pretrained, is expected)")
        return GeneratorSpec("diffusers", str(p.resolve()))
    if s.count("/") == 1 and not s.startswith((".", "/", "~")) and all(s.split("/")):
        return GeneratorSpec("diffusers", s)
    raise ModelUnavailable(f"Unknown generator: {s!r}. Must be one of: {', '.join(GENERATOR_CHOICES)}, "
                           "a Hugging Face model id (owner/name) or a local diffusers folder")


# ---------------------------------------------------------------------------------------
# Adapters

class VaeCodec:
    """``AutoencoderKL`` in the codec slot: tensors in, tensors out, float32 inside."""

    class _Cfg:
        def __init__(self, vae):
            c = vae.config
            self.scaling_factor = float(c.scaling_factor)
            self.latent_channels = int(c.latent_channels)
            self.patch = 2 ** (len(c.block_out_channels) - 1)  # the VAE's down-sampling factor

    def __init__(self, vae, *, offload_device=None):
        self.vae = vae.float().eval()
        self.config = self._Cfg(vae)
        self.offload_device = offload_device  # when set, the VAE lives there between calls

    def _run(self, fn, x, grad: bool = False):
        import torch

        dev = x.device
        if self.offload_device is not None:
            self.vae.to(dev)
        try:
            with torch.enable_grad() if grad else torch.no_grad():
                return fn(x.to(dev, torch.float32))
        finally:
            if self.offload_device is not None:
                self.vae.to(self.offload_device)

    def encode(self, images):
        out = self._run(self.vae.encode, images)
        return out.latent_dist.mean.to(images.dtype)

    def decode(self, latents):
        return self._run(lambda z: self.vae.decode(z).sample, latents).to(latents.dtype)

    def decode_differentiable(self, latents):
        """``decode`` with the autograd graph kept (the gradient failure search backpropagates through it)."""
        return self._run(lambda z: self.vae.decode(z).sample, latents, grad=True).to(latents.dtype)


class HFPromptEncoder:
    """CLIP text encoder(s) with the methods ``LatentDiffusionPipeline`` uses.

    encode_tokens(texts, max_len) -> (states (N, L, D) float32, mask (N, L) bool): padded to the
    tokenizer's full length, as SD is trained (the mask is all ones). With two encoders (SDXL)
    the penultimate hidden states are concatenated and ``encode_prompt_embeds`` also returns the
    second encoder's projected pooled vector, which the SDXL UNet takes as ``text_embeds``.
    """

    def __init__(self, tokenizers: list, encoders: list, *, device="cpu", dtype=None, offload_device=None):
        if len(tokenizers) != len(encoders) or not encoders:
            raise ValueError("one tokenizer per text encoder is required")
        self.tokenizers = list(tokenizers)
        self.encoders = [e.eval() for e in encoders]
        self.device = device
        self.offload_device = offload_device
        self.dual = len(encoders) > 1
        self.dim = sum(int(e.config.hidden_size) for e in encoders)
        self.max_length = int(min(min(getattr(t, "model_max_length", 77) or 77, 77) for t in tokenizers))

    def tokenize(self, text: str, max_len: int = 77) -> list[str]:
        tok = self.tokenizers[0]
        ids = tok(text, truncation=True, max_length=max_len).input_ids
        return tok.convert_ids_to_tokens(ids)

    def _hidden(self, texts: list[str], max_len: int):
        import torch

        states, pooled = [], None
        for tok, enc in zip(self.tokenizers, self.encoders):
            length = min(max_len, int(getattr(tok, "model_max_length", 77) or 77))
            ids = tok(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
            if self.offload_device is not None:
                enc.to(self.device)
            try:
                with torch.no_grad():
                    out = enc(ids.to(self.device), output_hidden_states=True)
            finally:
                if self.offload_device is not None:
                    enc.to(self.offload_device)
            states.append((out.hidden_states[-2] if self.dual else out.last_hidden_state).float())
            pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return torch.cat(states, -1), pooled.float()

    def encode_prompt_embeds(self, texts: list[str], max_len: int = 77):
        """(states, mask, pooled for the UNet or None)."""
        import torch

        states, pooled = self._hidden(list(texts), max_len)
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return states, mask, (pooled if self.dual else None)

    def encode_tokens(self, texts: list[str], max_len: int = 77):
        states, mask, _ = self.encode_prompt_embeds(texts, max_len)
        return states, mask

    def encode_pooled(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text (the CLIP pooled / projected embedding): region maps, directions."""
        import torch

        if len(texts) == 0:
            return np.zeros((0, self.dim), np.float32)
        _, pooled = self._hidden(list(texts), self.max_length)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------
# Building and loading

def pipeline_from_components(unet, vae, tokenizers: list, text_encoders: list, scheduler_config: dict, *,
                             device: str = "cpu", guidance_scale: float = 7.5, steps: int = 25,
                             offload: bool = False, attention_slicing: bool = False):
    """A ``LatentDiffusionPipeline`` over diffusers/transformers modules (already built)."""
    import torch
    from diffusers import DDIMScheduler

    from backends.generative.pipeline import LatentDiffusionPipeline

    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    unet = unet.to(device, dtype).eval()
    if attention_slicing:
        unet.set_attention_slice("auto")
    cfg = {k: v for k, v in dict(scheduler_config).items() if not k.startswith("_")}
    cfg.update(timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)
    scheduler = DDIMScheduler.from_config(cfg)
    off = "cpu" if offload and str(device) != "cpu" else None
    codec = VaeCodec(vae.to("cpu" if off else device), offload_device=off)
    enc_dtype = dtype if not off else torch.float32
    text = HFPromptEncoder(tokenizers, [e.to(off or device, enc_dtype) for e in text_encoders], device=device,
                           offload_device=off)
    for m in [unet, codec.vae, *text.encoders]:
        for p in m.parameters():
            p.requires_grad_(False)
    pipe = LatentDiffusionPipeline(unet, scheduler, codec, text, None, max_tokens=text.max_length,
                                   default_guidance_scale=guidance_scale, default_steps=steps, default_eta=0.0)
    pipe.vae_scale_factor = codec.config.patch
    return pipe


def _component_classes(root: str, download: bool) -> dict:
    """model_index.json of a local folder or a cached hub model: {component: [library, class]}."""
    local = Path(root)
    if local.is_dir():
        return json.loads((local / "model_index.json").read_text())
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(root, "model_index.json", local_files_only=not download)
    except Exception as exc:
        hint = ("" if download else f"; fetch it once with `huggingface-cli download {root}` "
                "or start the app with --download")
        raise ModelUnavailable(f"generator {root!r} is not in the local Hugging Face cache "
                               f"({type(exc).__name__}){hint}") from None
    return json.loads(Path(path).read_text())


def check_available(spec: str | GeneratorSpec, *, download: bool = False) -> GeneratorSpec:
    """Cheap check (no weights read) that a generator can be loaded here; ModelUnavailable if not."""
    from backends.hub import hub_offline_now

    gs = spec if isinstance(spec, GeneratorSpec) else parse_generator_spec(spec)
    if gs.kind == "diffusers":
        with hub_offline_now():
            _component_classes(gs.source, download)
    return gs


def load_diffusers_pipeline(spec: str | GeneratorSpec, device: str = "cpu", *, download: bool = False,
                            offload: bool = False, attention_slicing: bool = False):
    """Load a diffusers text-to-image model as a ``LatentDiffusionPipeline`` (see module doc).

    Raises ``ModelUnavailable`` with a clear message when it is not here, needs files this
    project will not read (pickled .bin/.ckpt only) or has an unsupported layout.
    """
    from backends.hub import hub_offline_now

    gs = spec if isinstance(spec, GeneratorSpec) else parse_generator_spec(spec)
    if gs.kind != "diffusers":
        raise ValueError(f"{gs.label!r} is not a diffusers model")
    with hub_offline_now():
        return _load(gs, device, download=download, offload=offload, attention_slicing=attention_slicing)


def _load(gs: GeneratorSpec, device: str, *, download: bool, offload: bool, attention_slicing: bool):
    import importlib

    src = gs.source
    index = _component_classes(src, download)
    missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if c not in index]
    if missing:
        raise ModelUnavailable(f"generator {gs.label!r} is not a Stable Diffusion-style pipeline "
                               f"(model_index.json lacks {', '.join(missing)})")
    local_only = not download or os.environ.get("HF_HUB_OFFLINE", "") == "1"
    common = dict(local_files_only=local_only)

    def component(name: str):
        lib, cls = index[name]
        klass = getattr(importlib.import_module(lib), cls)
        kw = dict(common, subfolder=name)
        if name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            kw["use_safetensors"] = True
        try:
            return klass.from_pretrained(src, **kw)
        except Exception as exc:
            raise ModelUnavailable(f"generator {gs.label!r}: could not load its {name} ({type(exc).__name__}: "
                                   f"{str(exc)[:200]}); only safetensors weights are read") from None

    from diffusers import DDIMScheduler

    try:
        sched_cfg = DDIMScheduler.load_config(src, subfolder="scheduler", **common)
    except Exception as exc:
        raise ModelUnavailable(f"generator {gs.label!r}: no scheduler config ({type(exc).__name__})") from None
    tokenizers, encoders = [component("tokenizer")], [component("text_encoder")]
    if "text_encoder_2" in index and index.get("text_encoder_2", [None])[0]:
        tokenizers.append(component("tokenizer_2"))
        encoders.append(component("text_encoder_2"))
    d = DEFAULTS.get(gs.alias, DEFAULTS["sd-turbo"] if "turbo" in src.lower() else DEFAULTS["sd15"])
    return pipeline_from_components(component("unet"), component("vae"), tokenizers, encoders, sched_cfg,
                                    device=device, guidance_scale=d["guidance_scale"], steps=d["steps"],
                                    offload=offload, attention_slicing=attention_slicing)


__all__ = ["ALIASES", "GENERATOR_CHOICES", "GeneratorSpec", "check_available", "HFPromptEncoder", "ModelUnavailable", "VaeCodec",
           "load_diffusers_pipeline", "parse_generator_spec", "pipeline_from_components"]
