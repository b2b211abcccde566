"""Region prompts: parse a painted canvas into masks, then generate with SpaText or MultiDiffusion.

Three steps, each usable from a notebook without the UI::

    parsed = parse_canvas(rgba_canvas)                 # palette snapping, specks, overlaps, resize
    spec = match_prompts(parsed, {"red": "a red circle", "blue": "a blue star"})
    out = generate(pipe, spec, "on a black background", method="multidiffusion", seed=0)

Methods (``METHODS``):

- ``spatext``: the pipeline's trained spatio-textual map (SpaText): each region's prompt vector is
  painted on its pixels and fed to the UNet's extra input channels (``pipe(region_masks=...)``).
- ``multidiffusion``: training-free (Bar-Tal et al.), for any ``LatentDiffusionPipeline`` (any
  UNet2DConditionModel + scheduler + codec). Each step the latent is denoised once per region
  prompt and once for the global prompt, and the results are blended by the masks,
  x = Σ mᵢ Φᵢ / Σ mᵢ (the global prompt's mask is what the regions leave uncovered). For the
  first ``bootstrap_steps`` steps, the outside of each region is replaced by a noised random
  constant-colour background, which pins each region's object inside its mask.
- ``paint_with_words``: cross-attention masking (eDiff-I's paint-with-words): the global prompt
  and the region prompts are joined into one prompt; inside each region the attention logits of
  that region's tokens get w · log(1 + σ_t) · max(QKᵀ) added.

No gradio imports; torch and scipy are imported inside functions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError

# Palette of region colours (name -> RGB). Distinct from each other and from white / black.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "blue": (67, 99, 216),
    "green": (60, 180, 75),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "cyan": (66, 212, 244),
}
BACKGROUND_RGB = (255, 255, 255)  # an unpainted (opaque) canvas; transparent pixels count as background too
CANVAS_SIZE = 512  # the editor's canvas side; other sizes are resized (and said so)
MIN_AREA_FRAC = 0.001  # painted specks smaller than this fraction of the canvas are dropped
OFF_PALETTE_DIST = 60.0  # RGB distance beyond which a pixel is no palette colour ...
BLEND_DIST = 40.0  # ... and this far from every blend of two of them: not painted with the palette
METHODS = ("spatext", "multidiffusion", "paint_with_words")
MAX_REGIONS = len(PALETTE)


_IMPORT_LOCK = __import__("threading").Lock()


def _heavy_imports() -> None:
    """Import torch and scipy.ndimage under a lock: two server threads importing torch for the
    first time at once can see a partially initialised module."""
    with _IMPORT_LOCK:
        import scipy.ndimage  # noqa: F401
        import torch  # noqa: F401


def hex_colour(name: str) -> str:
    r, g, b = PALETTE[name]
    return f"#{r:02x}{g:02x}{b:02x}"


# ---------------------------------------------------------------------------------------
# 1. Canvas parsing

@dataclass
class ParsedCanvas:
    """The regions painted on a canvas.

    labels: int16 (S, S) at the canvas resolution after resizing: 0 = background, i + 1 = colour
    ``colours[i]`` of the palette order. masks(): bool (R, S, S) of the colours present. notes:
    what was dropped, resized or resolved, in words.
    """

    labels: np.ndarray
    present: list[str]  # palette colours with at least one kept pixel, in palette order
    areas: dict[str, float]  # fraction of the canvas per present colour
    notes: list[str] = field(default_factory=list)
    dropped_specks: dict[str, int] = field(default_factory=dict)  # colour -> number of specks dropped

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def masks(self, size: int | None = None) -> np.ndarray:
        """float32 (R, size, size) coverage of each present colour (area-averaged when resized)."""
        names = list(PALETTE)
        hard = np.stack([self.labels == names.index(c) + 1 for c in self.present]) if self.present \
            else np.zeros((0,) + self.labels.shape, bool)
        return resize_masks(hard.astype(np.float32), size or self.size)

    def preview(self, size: int = 256, model_size: int | None = 64) -> np.ndarray:
        """uint8 (size, size, 3): each region in its palette colour on light grey, as the model
        sees it (masks at model_size, >= half coverage), enlarged with nearest neighbour."""
        lab = self.labels
        if model_size:
            m = self.masks(model_size)
            lab = np.zeros((model_size, model_size), np.int16)
            if len(m):
                best = m.argmax(0)
                keep = m.max(0) >= 0.5
                idx = np.asarray([list(PALETTE).index(c) + 1 for c in self.present])
                lab[keep] = idx[best[keep]]
        lut = np.asarray([(236, 236, 236)] + list(PALETTE.values()), np.uint8)
        img = lut[lab]
        rep = max(1, size // img.shape[0])
        img = np.repeat(np.repeat(img, rep, 0), rep, 1)
        return img


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Area-resize float masks (R, H, W) to (R, size, size) (bilinear when enlarging)."""
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (R, H, W), but have shape {masks.shape}")
    if masks.shape[1:] == (size, size) or masks.shape[0] == 0:
        return masks if masks.shape[0] else np.zeros((0, size, size), np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(masks))[None]
    if masks.shape[1] >= size and masks.shape[2] >= size:
        out = F.adaptive_avg_pool2d(t, size)
    else:
        out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out[0].clamp(0, 1).numpy()


def _as_rgba(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise InputError(f"canvas must be an (H, W, 3) or (H, W, 4) image, but has shape {arr.shape}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise InputError(f"canvas must be at least 8x8 pixels, but is {arr.shape[1]}x{arr.shape[0]}")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float32)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        arr = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    if arr.shape[-1] == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], -1)
    return arr


def snap_to_palette(rgba: np.ndarray, alpha_threshold: int = 128) -> tuple[np.ndarray, int]:
    """Label each pixel with the nearest palette colour (0 = background).

    Transparent pixels (alpha < threshold) and pixels nearest the unpainted background colour
    are background. Anti-aliased edges (blends of two palette / background colours, i.e. near
    the segment between them in RGB) go to the nearer of the two. Pixels that are neither near
    a palette colour nor such a blend are background too; their count is returned.
    """
    rgba = _as_rgba(rgba)
    rgb = rgba[..., :3].astype(np.float32).reshape(-1, 3)
    cands = np.asarray([BACKGROUND_RGB] + list(PALETTE.values()), np.float32)  # (1 + P, 3)
    d = ((rgb[:, None, :] - cands) ** 2).sum(-1)  # (N, 1 + P)
    lab = d.argmin(-1).astype(np.int16)
    dmin = np.sqrt(d.min(-1))
    opaque = rgba[..., 3].reshape(-1) >= alpha_threshold
    far = np.flatnonzero(opaque & (dmin > OFF_PALETTE_DIST))
    off = np.zeros(len(rgb), bool)
    if len(far):
        x = rgb[far]
        best_d = np.full(len(far), np.inf, np.float32)
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                a, ab = cands[i], cands[j] - cands[i]
                t = np.clip(((x - a) @ ab) / float(ab @ ab), 0, 1)
                dist = np.linalg.norm(x - (a + t[:, None] * ab), axis=1)
                better = dist < best_d
                best_d[better] = dist[better]
                lab[far[better]] = np.where(t[better] < 0.5, i, j)
        off[far[best_d > BLEND_DIST]] = True
    lab[~opaque | off] = 0
    return lab.reshape(rgba.shape[:2]), int(off.sum())


def _fill_from_nearest(labels: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Give each unknown pixel the label of the nearest known pixel."""
    if not unknown.any():
        return labels
    from scipy import ndimage

    if unknown.all():
        return np.zeros_like(labels)
    _, (iy, ix) = ndimage.distance_transform_edt(unknown, return_indices=True)
    out = labels.copy()
    out[unknown] = labels[iy[unknown], ix[unknown]]
    return out


def drop_specks(labels: np.ndarray, min_area: int) -> tuple[np.ndarray, dict[str, int]]:
    """Drop connected painted components smaller than min_area pixels, or nowhere 3 pixels thick
    (the anti-aliased seam between two strokes). Their pixels take the label of the nearest kept
    pixel (background included). Returns (labels, {colour: specks dropped})."""
    from scipy import ndimage

    names = list(PALETTE)
    unknown = np.zeros(labels.shape, bool)
    dropped: dict[str, int] = {}
    for v in np.unique(labels):
        if v == 0:
            continue
        m = labels == v
        comp, n = ndimage.label(m, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        areas = ndimage.sum_labels(m, comp, index=np.arange(1, n + 1))
        thick = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool))
        has_core = ndimage.maximum(thick, comp, index=np.arange(1, n + 1)).astype(bool)
        bad = np.flatnonzero((areas < min_area) | ~has_core) + 1
        if len(bad):
            unknown |= np.isin(comp, bad)
            dropped[names[v - 1]] = int(len(bad))
    return _fill_from_nearest(labels, unknown), dropped


def resolve_overlaps(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Make bool masks (R, H, W) exclusive: where several overlap, the later one (drawn on top)
    wins. Returns (masks, number of overlapping pixels)."""
    m = np.asarray(masks, bool).copy()
    if m.ndim != 3:
        raise InputError(f"masks must be (R, H, W), but have shape {m.shape}")
    overlap = int((m.sum(0) > 1).sum())
    for i in range(len(m) - 2, -1, -1):
        m[i] &= ~m[i + 1:].any(0)
    return m, overlap


def parse_canvas(canvas, *, layers: list | None = None, size: int = CANVAS_SIZE,
                 min_area_frac: float = MIN_AREA_FRAC) -> ParsedCanvas:
    """Parse a painted canvas (or the editor's layers, later layers on top) into regions.

    canvas: uint8 (H, W, 3|4) image (the editor's composite); layers: optional list of RGBA
    layers of the same size, used instead of the composite so overlaps between layers are
    found and resolved (the later layer wins). size: the side of the returned label map; a
    canvas of another size is resized to it (stretched if not square) and a note says so.
    """
    _heavy_imports()
    notes: list[str] = []
    sources = [canvas] if not layers else list(layers)
    if all(s is None for s in sources):
        raise InputError("canvas: nothing was painted (the canvas is empty)")
    sources = [_as_rgba(s) for s in sources if s is not None]
    h, w = sources[0].shape[:2]
    if any(s.shape[:2] != (h, w) for s in sources):
        raise InputError(f"canvas layers must all be {w}x{h}, but have sizes "
                         f"{', '.join(f'{s.shape[1]}x{s.shape[0]}' for s in sources)}")
    # 1. Snap each pixel to the palette
    labs, off_total = [], 0
    for s in sources:
        lab, off = snap_to_palette(s)
        labs.append(lab)
        off_total += off
    if off_total:
        notes.append(f"{off_total:,} pixels in colours outside the palette were ignored")
    # 2. Overlaps between layers: the later layer wins
    if len(labs) > 1:
        overlap = int(((np.stack(labs) > 0).sum(0) > 1).sum())
        lab = np.zeros((h, w), np.int16)
        for layer in labs:
            lab = np.where(layer > 0, layer, lab)
        if overlap:
            notes.append(f"{overlap:,} pixels painted in more than one layer: the upper layer wins")
    else:
        lab = labs[0]
    # 3. Resize (nearest on the snapped labels, so no new blends appear)
    if (h, w) != (size, size):
        how = "stretched" if h != w else "resized"
        notes.append(f"canvas is {w}x{h}, not {size}x{size}: {how} to {size}x{size}")
        iy = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
        ix = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
        lab = lab[iy][:, ix]
    # 4. Specks
    min_area = max(2, int(round(min_area_frac * size * size)))
    lab, dropped = drop_specks(lab, min_area)
    if dropped:
        parts = ", ".join(f"{c}: {n}" for c, n in dropped.items())
        notes.append(f"dropped {sum(dropped.values())} speck(s) smaller than {min_area} pixels "
                     f"or thinner than 3 pixels ({parts})")
    names = list(PALETTE)
    present = [c for i, c in enumerate(names) if (lab == i + 1).any()]
    areas = {c: float((lab == names.index(c) + 1).mean()) for c in present}
    return ParsedCanvas(lab.astype(np.int16), present, areas, notes, dropped)


def masks_to_canvas(masks, colours: list[str] | None = None, size: int | None = None) -> np.ndarray:
    """Paint bool/float masks (R, H, W) in palette colours on a white canvas (uint8 RGB); the
    inverse of parse_canvas, handy for the API and tests. Later masks are drawn on top."""
    m = np.asarray(masks, np.float32)
    if m.ndim == 2:
        m = m[None]
    colours = colours or list(PALETTE)[: len(m)]
    if len(colours) < len(m):
        raise InputError(f"{len(m)} masks but only {len(colours)} colours")
    if size:
        m = resize_masks(m, size)
    img = np.full(m.shape[1:] + (3,), BACKGROUND_RGB, np.uint8)
    for mk, c in zip(m, colours):
        img[mk >= 0.5] = PALETTE[c]
    return img


# ---------------------------------------------------------------------------------------
# 2. Prompts per region

@dataclass
class RegionSpec:
    """Validated regions: masks (R, S, S) float coverage in [0, 1], one prompt each."""

    masks: np.ndarray
    prompts: list[str]
    colours: list[str]
    notes: list[str] = field(default_factory=list)


def match_prompts(parsed: ParsedCanvas, prompts: dict[str, str], *, size: int = 64) -> RegionSpec:
    """Pair each painted colour with its prompt. Raises InputError for no regions, a colour
    without a prompt, or a prompt without a region (naming the colour)."""
    if not isinstance(prompts, dict):
        raise InputError(f"prompts must map palette colours to text, but is {type(prompts).__name__}")
    unknown = [k for k in prompts if k not in PALETTE]
    if unknown:
        raise InputError(f"Unknown region colour: {unknown[0]!r}. Must be one of: {', '.join(PALETTE)}")
    given = {k: (v or "").strip() for k, v in prompts.items() if isinstance(v, str) and v.strip()}
    if not parsed.present:
        extra = f" ({'; '.join(parsed.notes)})" if parsed.notes else ""
        raise InputError("no regions: paint at least one region on the canvas with a palette colour" + extra)
    missing = [c for c in parsed.present if c not in given]
    if missing:
        raise InputError(f"region {missing[0]!r} has no prompt: type what should appear in the {missing[0]} "
                         "region, or erase it")
    orphan = [c for c in given if c not in parsed.present]
    if orphan:
        why = " (its paint was dropped as specks)" if orphan[0] in parsed.dropped_specks else ""
        raise InputError(f"prompt for {orphan[0]!r} has no region: nothing is painted in {orphan[0]}{why}; "
                         "paint it or clear the prompt")
    masks = parsed.masks(size)
    empty = [c for c, m in zip(parsed.present, masks) if m.max() < 0.5]
    notes = list(parsed.notes)
    if empty:
        notes.append(f"region(s) {', '.join(empty)} cover less than half a pixel at {size}x{size} and may be ignored")
    return RegionSpec(masks, [given[c] for c in parsed.present], list(parsed.present), notes)


# ---------------------------------------------------------------------------------------
# 3. Generation

@dataclass
class RegionResult:
    images: dict[str, np.ndarray]  # method -> uint8 (H, W, 3)
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    plan: np.ndarray | None = None  # with a planner: uint8 (H, W, 3) preview of the planned objects in their areas


def plan_preview(painted, planned, colours: list[str], size: int = 256) -> np.ndarray:
    """What the model got after an object planner: each painted area in a pale tint of its palette
    colour, the planned object (>= half coverage) in the full colour, on light grey. uint8 (size, size, 3),
    enlarged with nearest neighbour."""
    painted, planned = np.asarray(painted, np.float32) >= 0.5, np.asarray(planned, np.float32) >= 0.5
    grey = np.array((236, 236, 236), np.float32)
    img = np.tile(grey, painted.shape[1:] + (1,))
    for area, obj, c in zip(painted, planned, colours):
        col = np.asarray(PALETTE[c], np.float32)
        img[area] = 0.7 * grey + 0.3 * col
        img[obj] = col
    img = img.astype(np.uint8)
    rep = max(1, size // img.shape[0])
    return np.repeat(np.repeat(img, rep, 0), rep, 1)


def _check_region_inputs(pipe, region_masks, region_prompts):
    import torch

    m = torch.as_tensor(np.ascontiguousarray(region_masks, np.float32))
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] < 1:
        raise ValueError(f"`region_masks` has to be (R, H, W) with R >= 1, but has shape {tuple(m.shape)}")
    prompts = [region_prompts] if isinstance(region_prompts, str) else list(region_prompts or [])
    if len(prompts) != m.shape[0]:
        raise ValueError(f"`region_prompts` has {len(prompts)} entries but `region_masks` has {m.shape[0]} regions")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError("`region_prompts` must be non-empty strings")
    if m.max() > 1.0:
        m = m / 255.0
    return m.clamp(0, 1), prompts


def latent_masks(pipe, region_masks) -> torch.Tensor:  # noqa: F821
    """(R, H, W) masks in [0, 1] -> (R, 1, h, w) coverage at the latent resolution."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(np.ascontiguousarray(region_masks, np.float32))
    if m.ndim == 2:
        m = m[None]
    s = pipe.latent_size
    if m.shape[-1] != s or m.shape[-2] != s:
        m = F.adaptive_avg_pool2d(m[None], s)[0] if m.shape[-1] >= s else \
            F.interpolate(m[None], size=(s, s), mode="bilinear", align_corners=False)[0]
    return m[:, None].clamp(0, 1).to(pipe.device, pipe.dtype)


def _decode(pipe, latents, output_type: str, notes):
    from backends.generative.pipeline import PipelineOutput

    if output_type == "latent":
        return PipelineOutput(latents, notes, latents)
    images = pipe.codec.decode(latents / pipe.codec.config.scaling_factor)
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return PipelineOutput(images, notes, latents)
    arr = images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
    return PipelineOutput(arr, notes, latents)


def constant_colour_latents(pipe, n: int, generator=None) -> torch.Tensor:  # noqa: F821
    """n latents of random constant-colour images (the bootstrapping backgrounds)."""
    import torch

    rgb = torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1  # in [-1, 1]
    side = pipe.latent_size * int(getattr(pipe.codec.config, "patch", 0) or getattr(pipe, "vae_scale_factor", 8))
    img = rgb.expand(n, 3, side, side).to(pipe.device, torch.float32)
    lat = pipe.codec.encode(img)
    if hasattr(lat, "latent_dist"):  # an AutoencoderKL
        lat = lat.latent_dist.mean
    return (lat * pipe.codec.config.scaling_factor).to(pipe.dtype)


def multidiffusion(pipe, prompt: str, region_masks, region_prompts, *, negative_prompt=None,
                   guidance_scale: float | None = None, num_inference_steps: int | None = None, generator=None,
                   latents=None, bootstrap_steps: int | None = None, global_weight: float = 0.0,
                   output_type: str = "np", callback_on_step_end=None):
    """MultiDiffusion region-based generation with any LatentDiffusionPipeline (training-free).

    prompt: the global prompt ("" allowed): it denoises what the regions leave uncovered (and,
    with global_weight > 0, also everywhere at that weight). region_masks: (R, H, W) masks
    in [0, 1] at any resolution (area-resized to the latent); region_prompts: R strings.
    bootstrap_steps: the first steps in which each region's outside is a noised random
    constant-colour background (default: 20% of the steps; 0 turns it off).
    Each step runs one UNet call on R + 1 latents (2(R + 1) with guidance), then
    x_{t-1} = Σ mᵢ Φᵢ(x_t) / Σ mᵢ. Returns a PipelineOutput (one image).
    """
    import torch

    guidance_scale = pipe.default_guidance_scale if guidance_scale is None else guidance_scale
    num_inference_steps = pipe.default_steps if num_inference_steps is None else num_inference_steps
    # 1. Check inputs
    if not isinstance(prompt, str):
        raise ValueError(f"`prompt` has to be a string, but is {type(prompt).__name__}")
    m_fg, rprompts = _check_region_inputs(pipe, region_masks, region_prompts)
    notes = pipe.check_inputs(prompt or rprompts[0], negative_prompt, guidance_scale, num_inference_steps, 0.0,
                              latents, None, None, None, output_type, callback_on_step_end, 1)
    if bootstrap_steps is None:
        bootstrap_steps = int(round(0.2 * num_inference_steps))
    if not isinstance(bootstrap_steps, (int, np.integer)) or not 0 <= bootstrap_steps <= num_inference_steps:
        raise ValueError(f"`bootstrap_steps` has to be an integer between 0 and {num_inference_steps}, "
                         f"but is {bootstrap_steps!r}")
    if not 0.0 <= float(global_weight) <= 1.0:
        raise ValueError(f"`global_weight` has to be between 0 and 1, but is {global_weight!r}")
    do_cfg = guidance_scale > 1.0
    with pipe._lock, torch.inference_mode():
        # 2. Weights at latent resolution: the global prompt gets what the regions leave uncovered
        fg = latent_masks(pipe, m_fg.numpy())  # (R, 1, h, w)
        bg = (1.0 - fg.sum(0, keepdim=True)).clamp(min=0.0)
        if global_weight > 0:
            bg = bg.clamp(min=float(global_weight))
        weights = torch.cat([bg, fg])  # (R + 1, 1, h, w)
        prompts = [prompt] + rprompts
        keep = [i for i in range(len(prompts)) if float(weights[i].max()) > 0]  # skip prompts with no area
        weights, prompts = weights[keep], [prompts[i] for i in keep]
        is_fg = torch.tensor([i > 0 for i in keep], device=pipe.device)
        n = len(prompts)
        # 3. Encode the prompts (one row per prompt)
        cond, uncond = pipe.encode_prompt(prompts, do_classifier_free_guidance=do_cfg,
                                          negative_prompt=None if negative_prompt is None else [negative_prompt] * n,
                                          notes=notes)
        smap = pipe.prepare_region_map(n)  # zeros for a SpaText model, None otherwise
        # 4. Timesteps and latents
        pipe.scheduler.set_timesteps(num_inference_steps, device=pipe.device)
        latents = pipe.prepare_latents(1, generator, latents)
        noise = latents.clone()
        backgrounds = constant_colour_latents(pipe, max(1, bootstrap_steps), generator) if bootstrap_steps else None
        count = weights.sum(0, keepdim=True)
        # 5. Denoising loop
        for i, t in enumerate(pipe.scheduler.timesteps):
            x = latents.expand(n, -1, -1, -1).clone()
            if i < bootstrap_steps and bool(is_fg.any()):
                pick = torch.randint(0, len(backgrounds), (n,), generator=generator)
                bgl = pipe.scheduler.add_noise(backgrounds[pick], noise.expand(n, -1, -1, -1), t.reshape(1).expand(n))
                hard = (weights >= 0.5).to(x.dtype)
                boot = x * hard + bgl * (1 - hard)
                x = torch.where(is_fg[:, None, None, None], boot, x)
            out = pipe.predict(x, t, cond, uncond, guidance_scale, smap)
            views = pipe.scheduler.step(out, t, x).prev_sample
            latents = torch.where(count > 0, (views * weights).sum(0, keepdim=True) / count.clamp(min=1e-8),
                                  views[:1])
            if callback_on_step_end is not None:
                ret = callback_on_step_end(pipe, i, t, {"latents": latents})
                if ret and "latents" in ret:
                    latents = ret["latents"]
        pipe.cfg_halves = None
        return _decode(pipe, latents, output_type, notes)


def spatext(pipe, prompt: str, region_masks, region_prompts, *, negative_prompt=None,
            guidance_scale: float | None = None, num_inference_steps: int | None = None, generator=None,
            latents=None, output_type: str = "np"):
    """SpaText: the pipeline's trained spatio-textual map from the masks and region prompts."""
    m, rprompts = _check_region_inputs(pipe, region_masks, region_prompts)
    if pipe.spatext is None or pipe.spatext_channels <= 0:
        raise ValueError("SpaText needs a model trained with a spatio-textual map; this one has none "
                         "(use method='multidiffusion')")
    return pipe(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                num_inference_steps=num_inference_steps, generator=generator, latents=latents,
                region_masks=m.numpy(), region_prompts=rprompts, output_type=output_type)


# ---------------------------------------------------------------------------------------
# Paint-with-words: cross-attention masking

SPECIAL_TOKENS = ("[CLS]", "[SEP]", "<s>", "</s>", "<|startoftext|>", "<|endoftext|>")  # BERT, RoBERTa, CLIP


def _find_span(tokens: list[str], sub: list[str]) -> tuple[int, int] | None:
    for s in range(len(tokens) - len(sub) + 1):
        if tokens[s:s + len(sub)] == sub:
            return s, s + len(sub)
    return None


def word_spans(pipe, full: str, phrases: list[str]) -> list[tuple[int, int] | None]:
    """Token index spans of each phrase inside the tokenised full prompt (None if cut off)."""
    toks = list(pipe.text_encoder.tokenize(full, max_len=pipe.max_tokens))
    spans, start = [], 0
    for p in phrases:
        sub = [t for t in pipe.text_encoder.tokenize(p, max_len=512) if t not in SPECIAL_TOKENS]
        sp = _find_span(toks[start:], sub) if sub else None
        spans.append(None if sp is None else (sp[0] + start, sp[1] + start))
        if sp is not None:
            start += sp[1]
    return spans


class _PaintWithWordsProcessor:
    """Cross-attention processor adding w·log(1+σ)·max(QKᵀ) to masked (query, token) logits.

    state: dict with "bias" (R, h, w) masks at latent res, "spans", "weight", "sigma", "rows"
    (the batch rows to bias: the conditional half). Self-attention is left untouched.
    """

    def __init__(self, state: dict):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        import torch
        import torch.nn.functional as F

        is_cross = encoder_hidden_states is not None
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        batch, seq, _ = hidden_states.shape
        ctx = encoder_hidden_states if is_cross else hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, ctx.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if is_cross and attn.norm_cross:
            ctx = attn.norm_encoder_hidden_states(ctx)
        k = attn.head_to_batch_dim(attn.to_k(ctx))
        v = attn.head_to_batch_dim(attn.to_v(ctx))
        scores = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device),
                               q, k.transpose(-1, -2), beta=0, alpha=attn.scale)
        st = self.state
        if is_cross and st.get("weight", 0) > 0 and st.get("masks") is not None:
            side = int(round(math.sqrt(seq)))
            masks = st["masks"]  # (R, 1, h, w)
            m = F.adaptive_avg_pool2d(masks, side) if masks.shape[-1] >= side else \
                F.interpolate(masks, size=(side, side), mode="bilinear")
            m = m.reshape(len(masks), side * side)  # (R, Nq)
            bias = torch.zeros(seq, k.shape[1], dtype=scores.dtype, device=scores.device)
            for r, span in enumerate(st["spans"]):
                if span is not None:
                    bias[:, span[0]:span[1]] += m[r][:, None]
            heads = attn.heads
            rows = st["rows"]  # slice of batch rows (before the head split)
            w = st["weight"] * math.log(1 + st["sigma"])
            sc = scores.view(batch, heads, seq, -1)
            peak = sc[rows].amax(dim=(-2, -1), keepdim=True)
            sc[rows] = sc[rows] + w * peak * bias
            scores = sc.view(batch * heads, seq, -1)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1).to(v.dtype)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, v))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, hh, ww)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def paint_with_words(pipe, prompt: str, region_masks, region_prompts, *, weight: float = 0.4, negative_prompt=None,
                     guidance_scale: float | None = None, num_inference_steps: int | None = None, generator=None,
                     latents=None, output_type: str = "np"):
    """Cross-attention masking: the region phrases are appended to the global prompt (unless it
    already contains them) and their tokens' attention is boosted inside their regions."""
    import torch

    m, rprompts = _check_region_inputs(pipe, region_masks, region_prompts)
    parts = [prompt.strip()] if prompt and prompt.strip() else []
    for p in rprompts:
        if p.strip().lower() not in (prompt or "").lower():
            parts.append(p.strip())
    full = ", ".join(parts)
    spans = word_spans(pipe, full, rprompts)
    notes = []
    if any(s is None for s in spans):
        lost = [p for p, s in zip(rprompts, spans) if s is None]
        notes.append(f"{', '.join(repr(p) for p in lost)} did not fit in the "
                     f"{pipe.max_tokens}-token prompt and are not masked")
    guidance_scale = pipe.default_guidance_scale if guidance_scale is None else guidance_scale
    num_inference_steps = pipe.default_steps if num_inference_steps is None else num_inference_steps
    notes += pipe.check_inputs(full, negative_prompt, guidance_scale, num_inference_steps, 0.0, latents, None, None,
                               None, output_type, None, 1)
    alphas = pipe.scheduler.alphas_cumprod
    # The processors are swapped on the shared UNet, so the whole loop holds the pipeline's lock
    # (other tabs using the same model wait rather than see masked attention).
    with pipe._lock, torch.inference_mode():
        state = {"masks": latent_masks(pipe, m.numpy()), "spans": spans, "weight": float(weight), "sigma": 1.0,
                 "rows": slice(0, 1)}
        old = dict(pipe.unet.attn_processors)
        pipe.unet.set_attn_processor({name: (_PaintWithWordsProcessor(state) if name.endswith("attn2.processor")
                                             else proc) for name, proc in old.items()})
        try:
            cond, uncond = pipe.encode_prompt([full], do_classifier_free_guidance=guidance_scale > 1.0,
                                              negative_prompt=negative_prompt, notes=notes)
            smap = pipe.prepare_region_map(1)
            pipe.scheduler.set_timesteps(num_inference_steps, device=pipe.device)
            latents = pipe.prepare_latents(1, generator, latents)
            for t in pipe.scheduler.timesteps:
                a = float(alphas[int(torch.as_tensor(t).reshape(-1)[0])])
                state["sigma"] = math.sqrt((1 - a) / max(a, 1e-8))  # σ_t of the step
                state["rows"] = slice(1, 2) if uncond is not None else slice(0, 1)  # the conditional half
                out = pipe.predict(latents, t, cond, uncond, guidance_scale, smap)
                latents = pipe.scheduler.step(out, t, latents).prev_sample
        finally:
            pipe.unet.set_attn_processor(old)
            pipe.cfg_halves = None
        return _decode(pipe, latents, output_type, notes)


# ---------------------------------------------------------------------------------------
# One entry point for the UI and the eval

def generate(pipe, spec: RegionSpec, prompt: str = "", *, method: str = "spatext", seed: int = 0,
             num_inference_steps: int | None = None, guidance_scale: float | None = None,
             bootstrap_steps: int | None = None, pww_weight: float = 0.4, negative_prompt=None,
             planner=None) -> RegionResult:
    """Generate with one method, or with all of them ("compare") from the same seed.

    planner: a world's object planner (backends.plugins.get_region_planner), applied to the areas
    before every method: planner(masks, prompts, model_size=...) -> (maps, notes).
    Returns uint8 images per method, the seconds each took, and notes.
    """
    import time

    _heavy_imports()
    import torch

    from backends.generative.pipeline import to_uint8

    if method == "compare":
        methods = [mth for mth in METHODS if mth != "spatext" or _has_spatext(pipe)]
    elif method in METHODS:
        methods = [method]
    else:
        raise InputError(f"Unknown method: {method!r}. Must be one of: {', '.join(METHODS + ('compare',))}")
    if method == "spatext" and not _has_spatext(pipe):
        raise InputError("method 'spatext' needs a model with a spatio-textual map; this one has none "
                         "(use multidiffusion or paint_with_words)")
    if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 32:
        raise InputError(f"seed must be an integer in 0..{2 ** 32 - 1}, but is {seed!r}")
    images, seconds, notes = {}, {}, list(spec.notes)
    masks = spec.masks
    if planner is not None:
        # the areas come at the model's image size (match_prompts(size=...)), and so does the plan
        masks, planned = planner(spec.masks, spec.prompts, model_size=int(np.shape(spec.masks)[-1]))
        notes += list(planned)
    for mth in methods:
        g = torch.Generator().manual_seed(int(seed))
        kw = dict(negative_prompt=negative_prompt or None, guidance_scale=guidance_scale,
                  num_inference_steps=num_inference_steps, generator=g)
        t0 = time.perf_counter()
        try:
            if mth == "spatext":
                out = spatext(pipe, prompt, masks, spec.prompts, **kw)
            elif mth == "multidiffusion":
                out = multidiffusion(pipe, prompt, masks, spec.prompts, bootstrap_steps=bootstrap_steps, **kw)
            else:
                out = paint_with_words(pipe, prompt, masks, spec.prompts, weight=pww_weight, **kw)
        except ValueError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(str(exc)) from None
        seconds[mth] = time.perf_counter() - t0
        images[mth] = to_uint8(out.images[0])
        notes += [f"{mth}: {n}" for n in out.notes]
    plan = plan_preview(spec.masks, masks, spec.colours) if planner is not None else None
    return RegionResult(images, seconds, notes, plan)


def _has_spatext(pipe) -> bool:
    return getattr(pipe, "spatext", None) is not None and pipe.spatext_channels > 0


__all__ = [
    "PALETTE", "METHODS", "CANVAS_SIZE", "ParsedCanvas", "RegionSpec", "RegionResult", "parse_canvas",
    "snap_to_palette", "drop_specks", "resolve_overlaps", "resize_masks", "masks_to_canvas", "match_prompts",
    "multidiffusion", "spatext", "paint_with_words", "word_spans", "generate", "hex_colour", "plan_preview",
]


# ---------------------------------------------------------------------------------------
# Named pipelines (the Shapes model by default; tests and notebooks register others)

_PIPELINE_FACTORIES: dict = {}


def register_pipeline(name: str, factory) -> None:
    """Make a pipeline available by name: factory() -> LatentDiffusionPipeline (called once)."""
    _PIPELINE_FACTORIES[name] = factory
    _PIPELINE_CACHE.pop(name, None)


_PIPELINE_CACHE: dict = {}


def pipeline_names() -> list[str]:
    return ["shapes"] + [n for n in _PIPELINE_FACTORIES if n != "shapes"]


def get_pipeline(name: str = "shapes", device: str = "cpu"):
    """The named pipeline, loaded on first use. InputError with a hint when weights are missing."""
    _heavy_imports()
    if name in _PIPELINE_CACHE:
        return _PIPELINE_CACHE[name]
    if name == "shapes" and name not in _PIPELINE_FACTORIES:
        from backends.plugins import get_generator

        return get_generator(name).load_pipeline(device=device)
    if name not in _PIPELINE_FACTORIES:
        raise InputError(f"Unknown model: {name!r}. Must be one of: {', '.join(pipeline_names())}")
    _PIPELINE_CACHE[name] = _PIPELINE_FACTORIES[name]()
    return _PIPELINE_CACHE[name]


class HashTextEncoder:
    """A deterministic stand-in text encoder (one pseudo-random vector per word) for tiny random
    pipelines in tests; it has the methods LatentDiffusionPipeline uses."""

    dim = 384

    def _word(self, w: str) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.sha1(w.encode("utf-8")).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def tokenize(self, text: str, max_len: int = 16) -> list[str]:
        return (["[CLS]"] + text.lower().replace(",", " ,").split() + ["[SEP]"])[:max_len]

    def encode_tokens(self, texts, max_len: int = 16):
        import torch

        states = torch.zeros(len(texts), max_len, self.dim)
        mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
        for i, t in enumerate(texts):
            for j, w in enumerate(self.tokenize(t, max_len)):
                states[i, j] = torch.from_numpy(self._word(w))
                mask[i, j] = True
        return states, mask

    def encode_pooled(self, texts) -> np.ndarray:
        import torch

        s, m = self.encode_tokens(texts, 64)
        v = (s * m[..., None]).sum(1) / m.sum(1, keepdim=True)
        return torch.nn.functional.normalize(v, dim=-1).numpy()


def tiny_random_pipeline(seed: int = 0, spatext_channels: int = 4, image_size: int = 64):
    """A tiny random pipeline of the default world's kind (64x64 images; milliseconds per step) for tests."""
    from backends.plugins import get_generator

    return get_generator().tiny(seed=seed, spatext_channels=spatext_channels, image_size=image_size)


__all__ += ["register_pipeline", "get_pipeline", "pipeline_names", "tiny_random_pipeline", "HashTextEncoder"]
