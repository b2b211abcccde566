"""Latent diffusion pipelines: text (+ optional SpaText region map) -> image.

``LatentDiffusionPipeline`` keeps the parts of diffusers' ``StableDiffusionPipeline`` surface
that the app uses, over any ``UNet2DConditionModel`` + scheduler + latent codec ("vae") + text
encoder, so the Shapes model and Stable Diffusion share one code path (h-space hooks, inversion,
region prompts)::

    pipe = Backends().generator_pipeline()   # the active generator (Shapes by default)
    out = pipe("a red circle in the top left", guidance_scale=4.0, num_inference_steps=20,
               generator=torch.Generator().manual_seed(0))
    out.images   # float32 (B, H, W, 3) in [0, 1]  (output_type="np"), or PIL images ("pil")
    out.notes    # what was clamped or cut, for showing to the user

Classifier-free guidance runs the unconditional and conditional halves in ONE UNet call (batch
[uncond, cond]); hooks on ``pipe.unet.mid_block`` therefore see both halves: rows [:B] are
unconditional, rows [B:] conditional (``pipe.cfg_halves``).

Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
with a ``guide`` model (the same network earlier in its training) the guided output is
``guide(x|c) + w·(model(x|c) − guide(x|c))``: both conditional, so the guidance pushes away from
the weaker model's errors instead of towards the prompt's average look. For the Shapes model
that average is a rotation-blurred template (a square averaged over rotations is a disc), which
classifier-free guidance amplifies (squares came out as discs at every scale > 2). The guide is a
separate UNet: hooks on ``pipe.unet`` see only the main model's rows (``cfg_halves`` = (empty,
all)). Region maps and negative prompts use classifier-free guidance.

Components (duck-typed):
- unet: ``UNet2DConditionModel``; if ``unet.config.class_embed_type`` is set, the pooled prompt
  vector (mean of the token states, L2-normalised) is passed as ``class_labels``.
- scheduler: a diffusers scheduler with ``set_timesteps`` / ``step`` / ``init_noise_sigma``
  (DDIM for Shapes).
- codec: ``encode(images in [-1, 1]) -> latents`` and ``decode(latents)``, ``config.scaling_factor``
  (the pixel-unshuffle codec, or an ``AutoencoderKL`` wrapper for SD).
- text_encoder: ``encode_tokens(texts, max_len) -> (states (N, L, D), mask (N, L))`` and
  ``encode_pooled(texts) -> (N, D)`` (MiniLM's, from the plug-in registry: ``backends.plugins.get_text_encoder``).
- spatext (optional): a SpaText map module ``(masks (B, R, H, W), embeds (B, R, D), size) ->
  (B, c, size, size)``; the UNet then takes ``latent channels + c`` input channels.
"""
from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PROMPT_CHARS = 1000  # longer prompts are cut (and the cut is reported)
MAX_GUIDANCE = 30.0
MAX_BATCH = 64
OUTPUT_TYPES = ("np", "pil", "pt", "latent")
# "cfg": classifier-free guidance; "auto": autoguidance by a weaker guide model (needs `guide`)
GUIDANCE_METHODS = ("cfg", "auto")


@dataclass
class PipelineOutput:
    images: Any  # np.ndarray (B, H, W, 3) float32 in [0, 1] | list[PIL.Image] | torch.Tensor
    notes: list[str] = field(default_factory=list)  # reported clamps and cuts
    latents: Any = None  # final latents (torch.Tensor)
    guidance_method: str | None = None  # the guidance the images were sampled with ("cfg" | "auto")


@dataclass
class PromptEmbeds:
    """Text conditioning for one side of guidance: token states, their mask, pooled vector."""

    states: Any  # (B, L, D) float
    mask: Any  # (B, L) bool
    pooled: Any  # (B, D) float


def _as_list(x, name: str) -> list[str]:
    if isinstance(x, str):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(p, str) for p in x):
        return list(x)
    raise ValueError(f"`{name}` has to be a string or a list of strings, but is {type(x).__name__}")


class LatentDiffusionPipeline:
    """Text-to-image with classifier-free guidance or autoguidance and an optional SpaText region map."""

    def __init__(self, unet, scheduler, codec, text_encoder, spatext=None, *, max_tokens: int = 16,
                 default_guidance_scale: float = 4.0, default_steps: int = 20, default_eta: float = 0.0,
                 default_region_guidance_scale: float | None = None, guide_unet=None,
                 default_guidance_method: str = "cfg"):
        if default_guidance_method not in GUIDANCE_METHODS:
            raise ValueError(f"`default_guidance_method` has to be one of {', '.join(GUIDANCE_METHODS)}, "
                             f"but is {default_guidance_method!r}")
        if default_guidance_method == "auto" and guide_unet is None:
            raise ValueError("autoguidance needs a guide model (`guide_unet`)")
        self.unet = unet
        # autoguidance: a weaker version of `unet` (same inputs), used only by guidance_method="auto"
        self.guide_unet = guide_unet
        self.default_guidance_method = default_guidance_method
        self.scheduler = scheduler
        self.codec = codec
        self.text_encoder = text_encoder
        self.spatext = spatext
        self.max_tokens = max_tokens
        self.default_guidance_scale = default_guidance_scale
        self.default_steps = default_steps
        self.default_eta = default_eta
        # guidance when a region map is given (the map already says where and what: less is better)
        self.default_region_guidance_scale = (default_guidance_scale if default_region_guidance_scale is None
                                              else default_region_guidance_scale)
        self.cfg_halves = None  # (uncond rows, cond rows) of the current UNet batch, for hooks
        self._lock = threading.Lock()  # the scheduler is stateful: one generation at a time

    # diffusers names the codec slot `vae`
    @property
    def vae(self):
        return self.codec

    @property
    def device(self):
        return next(self.unet.parameters()).device

    @property
    def dtype(self):
        return next(self.unet.parameters()).dtype

    @property
    def latent_channels(self) -> int:
        return int(self.codec.config.latent_channels)

    @property
    def latent_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s if isinstance(s, int) else s[0])

    @property
    def spatext_channels(self) -> int:
        return int(self.unet.config.in_channels) - self.latent_channels

    @property
    def guidance_methods(self) -> tuple[str, ...]:
        """The guidance methods this pipeline can run ("auto" only with a guide model)."""
        return GUIDANCE_METHODS if self.guide_unet is not None else ("cfg",)

    def resolve_guidance_method(self, method: str | None, *, has_map: bool = False,
                                negative_prompt=None, notes: list[str] | None = None) -> str:
        """The guidance method a call runs: `method`, or the default. Region maps and negative
        prompts need classifier-free guidance: the default gives way to it (noted); an explicit
        "auto" with either is refused (ValueError naming the argument)."""
        if method is not None and method not in self.guidance_methods:
            extra = "" if method not in GUIDANCE_METHODS else " (this model has no guide model for autoguidance)"
            raise ValueError(f"`guidance_method` has to be one of {', '.join(self.guidance_methods)}, "
                             f"but is {method!r}{extra}")
        if method == "auto":
            if has_map:
                raise ValueError("`guidance_method` 'auto' is for prompt-only generation; region maps use "
                                 "classifier-free guidance ('cfg')")
            if negative_prompt:
                raise ValueError("`negative_prompt` needs classifier-free guidance (`guidance_method` 'cfg'); "
                                 "autoguidance has no negative prompt")
            return "auto"
        if method is None and self.default_guidance_method == "auto" and not has_map:
            if not negative_prompt:
                return "auto"
            if notes is not None:
                notes.append("classifier-free guidance used: a negative prompt needs it (the default is autoguidance)")
        return "cfg"

    # ---------------------------------------------------------------------------------
    # 1. Check inputs
    def check_inputs(self, prompt, negative_prompt, guidance_scale, num_inference_steps, eta, latents,
                     region_masks, region_prompts, region_map, output_type, callback_on_step_end,
                     num_images_per_prompt) -> list[str]:
        """Raise ValueError naming the bad argument; return the list of cut/clamp notes."""
        notes: list[str] = []
        if prompt is None:
            raise ValueError("`prompt` has to be a string or a list of strings, but is None")
        prompts = _as_list(prompt, "prompt")
        if not prompts:
            raise ValueError("`prompt` must not be an empty list")
        if len(prompts) > MAX_BATCH:
            raise ValueError(f"`prompt` may hold at most {MAX_BATCH} prompts, but holds {len(prompts)}")
        has_regions = region_masks is not None or region_map is not None
        for p in prompts:
            if not p.strip() and not has_regions:
                raise ValueError("`prompt` must not be empty (describe the image, or give region prompts)")
            if len(p) > MAX_PROMPT_CHARS:
                notes.append(f"prompt cut from {len(p)} to {MAX_PROMPT_CHARS} characters")
        if negative_prompt is not None:
            neg = _as_list(negative_prompt, "negative_prompt")
            if len(neg) not in (1, len(prompts)):
                raise ValueError(f"`negative_prompt` has {len(neg)} entries but `prompt` has {len(prompts)}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not math.isfinite(guidance_scale):
            raise ValueError(f"`guidance_scale` has to be a finite number, but is {guidance_scale!r}")
        if not 0.0 <= guidance_scale <= MAX_GUIDANCE:
            raise ValueError(f"`guidance_scale` has to be between 0 and {MAX_GUIDANCE}, but is {guidance_scale}")
        n_train = int(self.scheduler.config.num_train_timesteps)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral):
            raise ValueError(f"`num_inference_steps` has to be an integer, but is {num_inference_steps!r}")
        if not 1 <= num_inference_steps <= n_train:
            raise ValueError(f"`num_inference_steps` has to be between 1 and {n_train}, but is {num_inference_steps}")
        if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not (0.0 <= eta <= 1.0):
            raise ValueError(f"`eta` has to be between 0 and 1, but is {eta!r}")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, numbers.Integral) \
                or not 1 <= num_images_per_prompt <= MAX_BATCH:
            raise ValueError(f"`num_images_per_prompt` has to be an integer between 1 and {MAX_BATCH}, but is {num_images_per_prompt!r}")
        if len(prompts) * num_images_per_prompt > MAX_BATCH:
            raise ValueError(f"`prompt` x `num_images_per_prompt` may be at most {MAX_BATCH} images, "
                             f"but is {len(prompts) * num_images_per_prompt}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` has to be one of {', '.join(OUTPUT_TYPES)}, but is {output_type!r}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise ValueError(f"`callback_on_step_end` has to be callable, but is {type(callback_on_step_end).__name__}")
        if latents is not None:
            shape = (len(prompts) * num_images_per_prompt, self.latent_channels, self.latent_size, self.latent_size)
            if tuple(getattr(latents, "shape", ())) != shape:
                raise ValueError(f"`latents` has to have shape {shape}, but has {tuple(getattr(latents, 'shape', ()))}")
        if region_map is not None and region_masks is not None:
            raise ValueError("pass either `region_map` or `region_masks` + `region_prompts`, not both")
        if (region_masks is not None or region_map is not None) and (self.spatext is None or self.spatext_channels <= 0):
            raise ValueError("`region_masks` need a model with a spatio-textual map (SpaText channels); this one has none")
        if region_masks is not None:
            if region_prompts is None:
                raise ValueError("`region_prompts` are required with `region_masks`")
            rp = _as_list(region_prompts, "region_prompts")
            shape = tuple(np.shape(region_masks))
            if len(shape) not in (2, 3, 4):
                raise ValueError(f"`region_masks` has to be (H, W), (R, H, W) or (B, R, H, W), but has shape {shape}")
            r = 1 if len(shape) == 2 else shape[-3]
            if len(rp) != r:
                raise ValueError(f"`region_prompts` has {len(rp)} entries but `region_masks` has {r} regions")
            if len(shape) == 4 and shape[0] not in (1, len(prompts) * num_images_per_prompt):
                raise ValueError(f"`region_masks` batch is {shape[0]} but there are {len(prompts) * num_images_per_prompt} images")
            if any(not p.strip() for p in rp):
                raise ValueError("`region_prompts` must not contain empty prompts")
            for p in rp:
                if len(p) > MAX_PROMPT_CHARS:
                    notes.append(f"region prompt cut from {len(p)} to {MAX_PROMPT_CHARS} characters")
        elif region_prompts is not None:
            raise ValueError("`region_prompts` given without `region_masks`")
        if region_map is not None:
            want = (self.spatext_channels, self.latent_size, self.latent_size)
            shape = tuple(getattr(region_map, "shape", ()))
            n = len(prompts) * num_images_per_prompt
            if len(shape) != 4 or shape[1:] != want or shape[0] not in (1, n):
                raise ValueError(f"`region_map` has to have shape ({n} or 1, {want[0]}, {want[1]}, {want[2]}), but has {shape}")
        return notes

    # ---------------------------------------------------------------------------------
    # 2. Encode the prompt
    def encode_prompt(self, prompt, *, num_images_per_prompt: int = 1, do_classifier_free_guidance: bool = True,
                      negative_prompt=None, notes: list[str] | None = None, extra_tokens=None):
        """Returns (cond PromptEmbeds, uncond PromptEmbeds or None).

        extra_tokens: (N, K, D) token states appended to each prompt's own (one row per prompt, in
        the conditioning space the UNet reads; the failure search's learnable tokens): they join the
        mask and the mean-pooled vector (a text encoder's own pooled vector, SDXL's, is kept); the
        unconditional side gets K masked-out zero tokens so both sides have the same length."""
        import torch

        prompts = [p[:MAX_PROMPT_CHARS] for p in _as_list(prompt, "prompt")]
        states, mask, pooled = self._encode(prompts)
        k = 0
        if extra_tokens is not None:
            extra = torch.as_tensor(extra_tokens)
            if extra.ndim != 3 or extra.shape[0] != len(prompts) or extra.shape[2] != states.shape[2]:
                raise ValueError(f"`extra_tokens` has to have shape ({len(prompts)}, K, {states.shape[2]}), "
                                 f"but has {tuple(extra.shape)}")
            k = extra.shape[1]
            states = torch.cat([states.to(extra.device, extra.dtype), extra], 1)
            mask = torch.cat([mask.to(extra.device), torch.ones(len(prompts), k, dtype=torch.bool, device=extra.device)], 1)
        if notes is not None:
            try:  # report prompts the text encoder cut
                full = [len(self.text_encoder.tokenize(p, max_len=512)) for p in prompts]
                if max(full) > self.max_tokens:
                    notes.append(f"prompt cut to its first {self.max_tokens - 2} word pieces (it has {max(full) - 2})")
            except Exception:  # a text encoder without .tokenize
                pass
        cond = self._embeds(states, mask, num_images_per_prompt, pooled)
        uncond = None
        if do_classifier_free_guidance:
            neg = [""] * len(prompts) if negative_prompt is None else _as_list(negative_prompt, "negative_prompt")
            if len(neg) == 1 and len(prompts) > 1:
                neg = neg * len(prompts)
            neg = [p[:MAX_PROMPT_CHARS] for p in neg]
            ns, nm, npooled = self._encode(neg)
            if k:
                ns = torch.cat([ns, ns.new_zeros(ns.shape[0], k, ns.shape[2])], 1)
                nm = torch.cat([nm, torch.zeros(nm.shape[0], k, dtype=torch.bool, device=nm.device)], 1)
            uncond = self._embeds(ns, nm, num_images_per_prompt, npooled)
        return cond, uncond

    def _encode(self, prompts: list[str]):
        """(states, mask, pooled or None): text encoders that give the UNet its own pooled vector
        (SDXL's second CLIP) have ``encode_prompt_embeds``; others are mean-pooled in ``_embeds``."""
        if hasattr(self.text_encoder, "encode_prompt_embeds"):
            return self.text_encoder.encode_prompt_embeds(prompts, max_len=self.max_tokens)
        states, mask = self.text_encoder.encode_tokens(prompts, max_len=self.max_tokens)
        return states, mask, None

    def _embeds(self, states, mask, n: int, pooled=None) -> PromptEmbeds:
        states = states.to(self.device, self.dtype).repeat_interleave(n, 0)
        mask = mask.to(self.device).repeat_interleave(n, 0)
        if pooled is None:
            pooled = pool_states(states, mask)
        else:
            pooled = pooled.to(self.device, self.dtype).repeat_interleave(n, 0)
        return PromptEmbeds(states, mask, pooled)

    # ---------------------------------------------------------------------------------
    # 3. Region map (SpaText)
    def prepare_region_map(self, batch: int, region_masks=None, region_prompts=None, region_map=None):
        """The spatio-textual map (batch, c, h, w) or None when the model has no SpaText channels."""
        import torch

        c = self.spatext_channels
        if c <= 0:
            return None
        s = self.latent_size
        if region_map is not None:
            m = torch.as_tensor(region_map, dtype=self.dtype, device=self.device)
            return m.expand(batch, -1, -1, -1) if m.ndim == 4 and m.shape[0] == 1 else m.reshape(batch, c, s, s)
        if region_masks is None:
            return torch.zeros(batch, c, s, s, device=self.device, dtype=self.dtype)
        m = torch.as_tensor(np.asarray(region_masks)).float()
        if m.ndim == 2:
            m = m[None]
        if m.ndim == 3:
            m = m[None]
        if m.max() > 1.0:  # uint8 0..255 masks
            m = m / 255.0
        m = m.clamp(0, 1).expand(batch, -1, -1, -1).to(self.device)
        prompts = [p[:MAX_PROMPT_CHARS] for p in _as_list(region_prompts, "region_prompts")]
        emb = torch.as_tensor(self.text_encoder.encode_pooled(prompts), dtype=torch.float32, device=self.device)
        emb = emb[None].expand(batch, -1, -1)
        with torch.no_grad():
            return self.spatext(m, emb, s).to(self.dtype)

    # ---------------------------------------------------------------------------------
    # 4./5. Latents
    def prepare_latents(self, batch: int, generator=None, latents=None):
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, self.latent_channels, self.latent_size, self.latent_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        else:
            latents = torch.as_tensor(latents).to(self.device, self.dtype)
        return latents * self.scheduler.init_noise_sigma

    # ---------------------------------------------------------------------------------
    # one guided model evaluation (shared by the loop, inversion and editing code)
    def predict(self, latents, t, cond: PromptEmbeds, uncond: PromptEmbeds | None, guidance_scale: float,
                smap=None, smap_uncond=None, method: str = "cfg"):
        """Guided model output at timestep t (what the scheduler's `step` expects).

        method "cfg": classifier-free guidance with `uncond` (None: the conditional output alone).
        method "auto": autoguidance, guide(x|cond) + w·(unet(x|cond) − guide(x|cond)); `uncond` unused.
        A scale <= 1 turns either off (the conditional output alone), as in ``__call__``."""
        import torch

        x = self.scheduler.scale_model_input(latents, t)
        b = x.shape[0]
        if method == "auto":
            self.cfg_halves = (slice(0, 0), slice(0, b))
            xs = x if smap is None else torch.cat([x, smap], 1)
            out = self._unet_out(self.unet, xs, t, cond.states, cond.mask, cond.pooled)
            if guidance_scale > 1.0:
                if self.guide_unet is None:
                    raise ValueError("autoguidance needs a guide model (`guide_unet`)")
                weak = self._unet_out(self.guide_unet, xs, t, cond.states, cond.mask, cond.pooled)
                out = weak + guidance_scale * (out - weak)
            return out
        if method != "cfg":
            raise ValueError(f"`method` has to be one of {', '.join(GUIDANCE_METHODS)}, but is {method!r}")
        if uncond is not None:
            x = torch.cat([x, x])
            states = torch.cat([uncond.states, cond.states])
            mask = torch.cat([uncond.mask, cond.mask])
            pooled = torch.cat([uncond.pooled, cond.pooled])
            if smap is not None:
                smap = torch.cat([smap_uncond if smap_uncond is not None else torch.zeros_like(smap), smap])
            self.cfg_halves = (slice(0, b), slice(b, 2 * b))
        else:
            states, mask, pooled = cond.states, cond.mask, cond.pooled
            self.cfg_halves = (slice(0, 0), slice(0, b))
        if smap is not None:
            x = torch.cat([x, smap], 1)
        out = self._unet_out(self.unet, x, t, states, mask, pooled)
        if uncond is not None:
            out_u, out_c = out.chunk(2)
            out = out_u + guidance_scale * (out_c - out_u)
        return out

    def _unet_out(self, unet, x, t, states, mask, pooled):
        """One UNet evaluation (`x` already holds the region-map channels)."""
        import torch

        kwargs = {}
        if getattr(unet.config, "class_embed_type", None) is not None:
            kwargs["class_labels"] = pooled
        if getattr(unet.config, "addition_embed_type", None) == "text_time":  # SDXL micro-conditioning
            side = self.latent_size * int(getattr(self.codec.config, "patch", 8))
            ids = torch.tensor([side, side, 0, 0, side, side], device=x.device, dtype=x.dtype)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids.expand(x.shape[0], -1)}
        return unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask, **kwargs).sample

    # ---------------------------------------------------------------------------------
    def __call__(self, prompt, negative_prompt=None, guidance_scale: float | None = None,
                 num_inference_steps: int | None = None, generator=None, latents=None, eta: float | None = None,
                 region_masks=None, region_prompts=None, region_map=None,
                 callback_on_step_end: Callable | None = None, output_type: str = "np",
                 num_images_per_prompt: int = 1, guidance_method: str | None = None) -> PipelineOutput:
        """Generate images.

        prompt: str or list of str. negative_prompt: replaces the empty prompt of the unconditional
        half (classifier-free guidance only). guidance_scale: 0..30 (<= 1 turns guidance off).
        guidance_method: "cfg" (classifier-free) or "auto" (autoguidance by the guide model; prompt
        only); None: the model's default, classifier-free with a region map or negative prompt. num_inference_steps: 1..1000.
        generator: torch.Generator for reproducible noise. latents: start noise
        (B, C, h, w). eta: DDIM noise (0 = deterministic DDIM, 1 = DDPM-like; default from the
        model config: the Shapes model samples markedly better with 1). region_masks: (R, H, W) or (B, R, H, W)
        masks (bool, or float in [0, 1]) with one prompt each in region_prompts; region_map: a
        ready spatio-textual map instead. callback_on_step_end(pipe, i, t, {"latents": ...}) may
        return {"latents": new}. output_type: "np" (float [0, 1]), "pil", "pt", "latent".
        """
        import torch

        if guidance_scale is None:
            has_map = region_map is not None or region_masks is not None
            guidance_scale = self.default_region_guidance_scale if has_map else self.default_guidance_scale
        num_inference_steps = self.default_steps if num_inference_steps is None else num_inference_steps
        eta = self.default_eta if eta is None else eta
        # 1. Check inputs
        notes = self.check_inputs(prompt, negative_prompt, guidance_scale, num_inference_steps, eta, latents,
                                  region_masks, region_prompts, region_map, output_type, callback_on_step_end,
                                  num_images_per_prompt)
        has_map = region_map is not None or region_masks is not None
        method = self.resolve_guidance_method(guidance_method, has_map=has_map, negative_prompt=negative_prompt,
                                              notes=notes)
        prompts = _as_list(prompt, "prompt")
        batch = len(prompts) * num_images_per_prompt
        do_cfg = guidance_scale > 1.0 and method == "cfg"
        with self._lock, torch.inference_mode():
            # 2. Encode the prompt (and the negative / empty prompt for guidance)
            cond, uncond = self.encode_prompt(prompts, num_images_per_prompt=num_images_per_prompt,
                                              do_classifier_free_guidance=do_cfg, negative_prompt=negative_prompt,
                                              notes=notes)
            # 3. Region map (zeros when there are no regions; the unconditional half always gets zeros)
            smap = self.prepare_region_map(batch, region_masks, region_prompts, region_map)
            # 4. Timesteps
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
            timesteps = self.scheduler.timesteps
            # 5. Initial latents
            latents = self.prepare_latents(batch, generator, latents)
            # 6. Denoising loop
            step_kwargs = {"eta": eta, "generator": generator} if "eta" in _step_params(self.scheduler) else {}
            for i, t in enumerate(timesteps):
                out = self.predict(latents, t, cond, uncond, guidance_scale, smap, method=method)
                latents = self.scheduler.step(out, t, latents, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    ret = callback_on_step_end(self, i, t, {"latents": latents})
                    if ret and "latents" in ret:
                        latents = ret["latents"]
            self.cfg_halves = None
            # 7. Decode
            if output_type == "latent":
                return PipelineOutput(latents, notes, latents, method)
            images = self.codec.decode(latents / self.codec.config.scaling_factor)
            images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return PipelineOutput(images, notes, latents, method)
        arr = images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        if output_type == "pil":
            from PIL import Image

            return PipelineOutput([Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr], notes, latents,
                                  method)
        return PipelineOutput(arr, notes, latents, method)


def _step_params(scheduler) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def pool_states(states, mask):
    """Mean of the token states over the mask, L2-normalised: (B, L, D), (B, L) -> (B, D).

    For prompts within max_tokens this equals MiniLM's sentence vector (mean pooling + L2).
    """
    import torch

    m = mask.to(states.dtype).unsqueeze(-1)
    v = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(v, dim=-1)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [0, 1] -> uint8."""
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


__all__ = ["LatentDiffusionPipeline", "PipelineOutput", "PromptEmbeds", "pool_states", "to_uint8"]
