"""The Shapes generator: a small diffusers UNet on an exact pixel-unshuffle latent.

Parts (the same slots as Stable Diffusion, so pipelines and hooks are shared):

- ``PixelUnshuffleCodec`` (the "VAE" slot): 64x64x3 images in [-1, 1] <-> 16x16x48 latents by
  space-to-depth. A pure permutation of the pixels, so ``decode(encode(x)) == x`` exactly.
- ``UNet2DConditionModel`` from diffusers: cross-attention on MiniLM token states at the 8x8
  and 4x4 levels and in the mid block; the pooled prompt vector (mean of the token states,
  L2-normalised) enters through the class-embedding slot (added to the time embedding).
- ``SpatioTextualMap`` (SpaText): per region, a learned linear map of the region prompt's pooled
  MiniLM vector (384 -> c), painted onto the region's pixels at latent resolution; zeros outside
  every region. Concatenated to the latent as extra UNet input channels.
- ``DDIMScheduler``: x0 ("sample") prediction, cosine schedule, "trailing" timestep spacing.

    gen = load_generator()              # from assets/shapes/generator.{safetensors,json}
    gen.unet, gen.spatext, gen.codec, gen.config, gen.make_scheduler()

Heavy imports (torch, diffusers) happen inside functions; importing this module is cheap.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backends.paths import assets_dir

ASSETS = assets_dir() / "shapes"
WEIGHTS = ASSETS / "generator.safetensors"
CONFIG = ASSETS / "generator.json"


@dataclass
class GeneratorConfig:
    image_size: int = 32
    patch: int = 4  # pixel-unshuffle factor: latent is (3*patch^2, image_size/patch, image_size/patch)
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    # None: the mirror of down_block_types (CrossAttnDownBlock2D -> CrossAttnUpBlock2D)
    up_block_types: tuple[str, ...] | None = None
    layers_per_block: int = 1
    head_dim: int = 32  # channels per attention head
    # transformer layers at the coarsest level (the mid block, and the coarsest down/up blocks when
    # they cross-attend); the other levels have one
    deep_transformer_layers: int = 1
    norm_num_groups: int = 8
    text_dim: int = 384
    max_tokens: int = 24  # MiniLM token states the UNet cross-attends to
    spatext_channels: int = 16
    # The pooled prompt vector added to the time embedding reaches every ResNet, the full-resolution
    # ones included, so colour (and most of the prompt) bypasses the bottleneck and h-space edits
    # cannot move it. Without it the prompt enters only by cross-attention at the coarse levels and
    # the mid block, and the decoder has to read it from there.
    pooled_conditioning: bool = True
    # The pooled prompt vector, projected, added to the mid block's input (a per-channel bias): the
    # prompt then reaches the decoder only through h (the mid block's output). It did not by itself
    # speed up learning the prompt (colour 10% at 3,000 steps, as without it); with coarse_skips=False
    # too, colour reached 38% at 10,000 steps and 90-98% at 23,000-25,000 (README).
    mid_prompt: bool = False
    # False: the skip connections at the coarsest resolution (the mid block's) carry zeros, so h is
    # the decoder's only input at that level. With them, the decoder was measured to read the same
    # content from the skips and ignore h (zeroing h changed the output by 6% of its size).
    coarse_skips: bool = True
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "sample"
    # Clip the predicted x0 to [-1, 1] at each sampling step (diffusers' clip_sample). Off: with it,
    # the step-50,000 model's judged colour fell as steps were added (200 validation prompts,
    # guidance 2.5: 94% at 20 steps, 75% at 30) and shape+colour with it (0.46 / 0.41); without it,
    # colour stays at 99-100% and more steps help (0.45 / 0.54 / 0.56 at 20 / 30 / 50 steps).
    clip_sample: bool = False
    # defaults the pipeline uses (measured; see eval_generator)
    # "cfg" (classifier-free) or "auto" (autoguidance by `guide_weights`, the same run's EMA weights
    # from earlier in training; prompt-only generation, see backends.generative.pipeline)
    guidance_method: str = "cfg"
    guide_weights: str | None = None  # file name next to this config (safetensors + its .json)
    guidance_scale: float = 4.0  # the scale of guidance_method
    num_inference_steps: int = 20
    eta: float = 1.0  # DDIM eta: stochastic sampling measured better than eta=0 for this model
    region_guidance_scale: float | None = None  # with a SpaText map (None: guidance_scale)
    # The Directions tab's starting choice of guidance half for reading h and for adding Δh
    # (backends.generative.hspace RECORD_HALVES / EDIT_HALVES). "uncond" / "both" is Haas et al.'s setting; for
    # the shipped generator "cond" / "cond" is what makes a colour slider visibly work (colour -> blue
    # at 1 / 2 / 4x its default strength: 0 / 0 / 0% of samples changed vs 5 / 33 / 81%; README).
    directions_record_half: str = "uncond"
    directions_delta_half: str = "both"
    trained_steps: int = 0
    metrics: dict = field(default_factory=dict)

    @property
    def latent_channels(self) -> int:
        return 3 * self.patch * self.patch

    @property
    def latent_size(self) -> int:
        return self.image_size // self.patch

    def to_json(self) -> str:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        d["down_block_types"] = list(self.down_block_types)
        if self.up_block_types is not None:
            d["up_block_types"] = list(self.up_block_types)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GeneratorConfig:
        d = json.loads(text)
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        for k in ("block_out_channels", "down_block_types", "up_block_types"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def guide_path(path: str | Path | None = None) -> Path | None:
    """The guide model's weights named by the generator config at `path` (shipped by default), or
    None when the config names none or the file is missing."""
    path = Path(path) if path is not None else WEIGHTS
    cfg_path = path.with_suffix(".json")
    if not cfg_path.exists():
        return None
    name = GeneratorConfig.from_json(cfg_path.read_text()).guide_weights
    if not name or Path(name).name != name:  # a bare file name next to the config, nothing else
        return None
    guide = path.parent / name
    return guide if guide.exists() else None


def shipped_config() -> GeneratorConfig:
    """The shipped generator's config (assets/shapes/generator.json; defaults when absent), read
    without loading weights: sampling defaults for the UI."""
    return GeneratorConfig.from_json(CONFIG.read_text()) if CONFIG.exists() else GeneratorConfig()


def record_metric(name: str, value: dict, config_path=None) -> None:
    """Write `value` as metrics[name] of the generator's JSON config (the shipped one by default), keeping
    the rest of it; atomic. The evaluations that the app reads back (regions_eval, supervised_eval) use it."""
    path = Path(config_path or CONFIG)
    d = json.loads(path.read_text())
    d.setdefault("metrics", {})[name] = value
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, indent=1))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------
# Latent codec (the VAE slot)

class PixelUnshuffleCodec:
    """Exact, invertible space-to-depth codec. No parameters.

    encode: float tensor (B, 3, H, W) in [-1, 1] -> (B, 3*p*p, H/p, W/p)
    decode: the inverse permutation.
    Mirrors the bits of ``AutoencoderKL`` a pipeline uses: ``config.scaling_factor``,
    ``encode`` / ``decode``.
    """

    class _Cfg:
        def __init__(self, patch: int):
            self.scaling_factor = 1.0
            self.patch = patch
            self.latent_channels = 3 * patch * patch

    def __init__(self, patch: int = 4):
        if patch < 1:
            raise ValueError(f"patch must be at least 1, but is {patch}")
        self.patch = patch
        self.config = self._Cfg(patch)

    def encode(self, images):
        import torch.nn.functional as F

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), but have shape {tuple(images.shape)}")
        if images.shape[-1] % self.patch or images.shape[-2] % self.patch:
            raise ValueError(f"image side must be a multiple of {self.patch}, but is {tuple(images.shape[-2:])}")
        return F.pixel_unshuffle(images, self.patch)

    def decode(self, latents):
        import torch.nn.functional as F

        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must be (B, {self.config.latent_channels}, h, w), but have shape {tuple(latents.shape)}")
        return F.pixel_shuffle(latents, self.patch)

    @staticmethod
    def images_to_tensor(images: np.ndarray):
        """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [-1, 1]."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    @staticmethod
    def tensor_to_images(x) -> np.ndarray:
        """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
        x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(dtype=__import__("torch").uint8)
        return x.permute(0, 2, 3, 1).cpu().numpy()


# ---------------------------------------------------------------------------------------
# Text helpers and the spatio-textual map

def pool_states(states, mask):
    """Mean of the token states over the mask, L2-normalised (backends.generative.pipeline.pool_states)."""
    from backends.generative.pipeline import pool_states as _pool

    return _pool(states, mask)


def _spatext_module():
    import torch
    from torch import nn

    class SpatioTextualMap(nn.Module):
        """SpaText map: regions' pooled text vectors, projected (D -> c) and painted on their masks.

        forward(masks, embeds, size): masks float (B, R, H, W) in [0, 1] at any resolution
        (area-resized to size x size), embeds (B, R, D) -> (B, c, size, size). Zeros outside
        every region; where regions overlap their contributions add, weighted by coverage.
        """

        def __init__(self, text_dim: int = 384, channels: int = 16):
            super().__init__()
            self.proj = nn.Linear(text_dim, channels)
            self.channels = channels

        def forward(self, masks, embeds, size: int):
            b = masks.shape[0]
            if masks.shape[1] == 0:
                return masks.new_zeros(b, self.channels, size, size)
            m = masks.float()
            if m.shape[-1] != size or m.shape[-2] != size:
                m = torch.nn.functional.adaptive_avg_pool2d(m, size)
            v = self.proj(embeds.float())  # (B, R, c)
            return torch.einsum("brhw,brc->bchw", m, v)

        def zeros(self, batch: int, size: int, like=None):
            import torch

            return torch.zeros(batch, self.channels, size, size) if like is None else like.new_zeros(batch, self.channels, size, size)

    return SpatioTextualMap


def build_spatext(cfg: GeneratorConfig):
    return _spatext_module()(cfg.text_dim, cfg.spatext_channels)


def _mid_prompt_module():
    import torch
    from torch import nn

    class MidPrompt(nn.Module):
        """Adds W·pool(prompt states) + b to the mid block's input, per channel (zero at init).

        Installed as a forward pre-hook of ``unet.mid_block``, which diffusers calls with the
        prompt's token states and its attention mask (already a 0 / -10000 bias), so every caller
        of the UNet (pipelines, h-space hooks, inversion, Jacobians) gets it without knowing.
        """

        def __init__(self, text_dim: int, channels: int):
            super().__init__()
            self.proj = nn.Linear(text_dim, channels)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

        def pre_hook(self, module, args, kwargs):
            states = kwargs.get("encoder_hidden_states")
            if states is None or not args:
                return None
            bias = kwargs.get("encoder_attention_mask")
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device) if bias is None \
                else (bias.reshape(states.shape[0], -1) > -1.0)
            v = pool_states(states.float(), mask)
            h = args[0]
            h = h + self.proj(v).to(h.dtype)[:, :, None, None]
            return (h, *args[1:]), kwargs

        def install(self, unet):
            return unet.mid_block.register_forward_pre_hook(self.pre_hook, with_kwargs=True)

    return MidPrompt


def _zero_coarse_skips(size: int):
    def hook(module, args, output):
        hidden, states = output
        return hidden, tuple(o.new_zeros(()).expand_as(o) if o.shape[-1] == size else o for o in states)

    return hook


def install_skip_cut(cfg: GeneratorConfig, unet) -> None:
    """Unless cfg.coarse_skips: every down block's skip output at the coarsest resolution becomes
    zeros (the down path itself, into the mid block, is unchanged)."""
    if cfg.coarse_skips:
        return
    size = cfg.latent_size // 2 ** (len(cfg.block_out_channels) - 1)
    for block in unet.down_blocks:
        block.register_forward_hook(_zero_coarse_skips(size))


def build_mid_prompt(cfg: GeneratorConfig, unet):
    """The MidPrompt module for a config (None unless cfg.mid_prompt), installed on the UNet."""
    if not cfg.mid_prompt:
        return None
    m = _mid_prompt_module()(cfg.text_dim, cfg.block_out_channels[-1])
    m.install(unet)
    return m


def build_unet(cfg: GeneratorConfig):
    """The UNet2DConditionModel for a config (random weights)."""
    from diffusers import UNet2DConditionModel

    up = {"DownBlock2D": "UpBlock2D", "CrossAttnDownBlock2D": "CrossAttnUpBlock2D"}
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels + cfg.spatext_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=tuple(cfg.down_block_types),
        up_block_types=(tuple(cfg.up_block_types) if cfg.up_block_types is not None
                        else tuple(up[b] for b in reversed(cfg.down_block_types))),
        layers_per_block=cfg.layers_per_block,
        # diffusers' `attention_head_dim` is the number of heads per block (a known naming issue)
        attention_head_dim=tuple(max(1, c // cfg.head_dim) for c in cfg.block_out_channels),
        transformer_layers_per_block=(1,) * (len(cfg.block_out_channels) - 1) + (cfg.deep_transformer_layers,),
        norm_num_groups=cfg.norm_num_groups,
        cross_attention_dim=cfg.text_dim,
        class_embed_type="projection" if cfg.pooled_conditioning else None,
        projection_class_embeddings_input_dim=cfg.text_dim if cfg.pooled_conditioning else None,
    )


def make_scheduler(cfg: GeneratorConfig):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=cfg.clip_sample,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )


@dataclass
class ShapesGenerator:
    """The trained parts, ready for ``backends.generative.pipeline.LatentDiffusionPipeline``."""

    config: GeneratorConfig
    unet: object
    spatext: object
    codec: PixelUnshuffleCodec
    mid_prompt: object = None  # MidPrompt, installed on unet.mid_block (cfg.mid_prompt)

    def make_scheduler(self):
        return make_scheduler(self.config)

    def named_modules(self) -> dict:
        """The trained modules by their key prefix in the weights file (UNet, SpaText map, and the
        mid-block prompt projection if any)."""
        return {k: m for k, m in (("unet", self.unet), ("spatext", self.spatext), ("mid_prompt", self.mid_prompt))
                if m is not None}

    def modules(self) -> list:
        return list(self.named_modules().values())

    def parameters(self) -> list:
        return [p for m in self.modules() for p in m.parameters()]


def build_generator(cfg: GeneratorConfig | None = None, seed: int = 0) -> ShapesGenerator:
    import torch

    cfg = cfg or GeneratorConfig()
    torch.manual_seed(seed)
    unet = build_unet(cfg)
    install_skip_cut(cfg, unet)
    return ShapesGenerator(cfg, unet, build_spatext(cfg), PixelUnshuffleCodec(cfg.patch), build_mid_prompt(cfg, unet))


def generator_state_dict(gen: ShapesGenerator) -> dict:
    return {f"{name}.{k}": v for name, m in gen.named_modules().items() for k, v in m.state_dict().items()}


def load_generator_state(gen: ShapesGenerator, tensors: dict) -> None:
    for name, m in gen.named_modules().items():
        m.load_state_dict({k[len(name) + 1:]: v.float() for k, v in tensors.items() if k.startswith(name + ".")})


def save_generator(gen: ShapesGenerator, path: str | Path = WEIGHTS, *, half: bool = True) -> None:
    """Write <path> (safetensors, fp16 by default) and the JSON config next to it, atomically."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().to(torch.float16) if half and v.is_floating_point() else v.detach()).contiguous().cpu()
          for k, v in generator_state_dict(gen).items()}
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "config": gen.config.to_json()})
    tmp.replace(path)
    jtmp = path.with_suffix(".json.tmp")
    jtmp.write_text(gen.config.to_json())
    jtmp.replace(path.with_suffix(".json"))


_CACHE: dict = {}
_LOCK = threading.Lock()


def load_generator(path: str | Path | None = None, device: str = "cpu") -> ShapesGenerator:
    """Load the shipped generator (cached per path and device). Raises FileNotFoundError with a hint."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    key = (str(path.resolve()), str(device))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if not path.exists():
            raise FileNotFoundError(f"generator weights not found at {path}; train them with "
                                    "`python -m backends.shapes.train generator`")
        cfg_path = path.with_suffix(".json")
        cfg = GeneratorConfig.from_json(cfg_path.read_text()) if cfg_path.exists() else GeneratorConfig()
        gen = build_generator(cfg)
        load_generator_state(gen, load_file(str(path)))
        for m in gen.modules():
            m.to(device).eval()
        for p in gen.parameters():
            p.requires_grad_(False)
        _CACHE[key] = gen
        return gen


# ---------------------------------------------------------------------------------------
# Region prompts for training (short object phrases, varied wording)

def object_phrase(obj, rng: np.random.Generator) -> str:
    """A short varied phrase for one object ("a tiny crimson disc", "blue square")."""
    from backends.shapes import scenes

    words = []
    if rng.random() < 0.5:
        words.append(scenes.SIZE_WORDS[obj.size][int(rng.integers(len(scenes.SIZE_WORDS[obj.size])))])
    cw = scenes.COLOUR_WORDS[obj.colour]
    sw = scenes.SHAPE_WORDS[obj.shape]
    words.append(cw[int(rng.integers(len(cw)))])
    words.append(sw[int(rng.integers(len(sw)))])
    phrase = " ".join(words)
    if rng.random() < 0.7:
        phrase = ("an " if phrase[0] in "aeiou" else "a ") + phrase
    return phrase


__all__ = [
    "GeneratorConfig", "PixelUnshuffleCodec", "ShapesGenerator", "build_generator", "build_unet",
    "build_spatext", "make_scheduler", "load_generator", "save_generator", "pool_states", "object_phrase",
]
