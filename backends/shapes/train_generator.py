"""Train the Shapes generator (UNet on pixel-unshuffle latents, MiniLM conditioning, SpaText map).

    python -m backends.shapes.train generator [--steps N] [--resume] [--batch B] [--world W] [--threads T]

Model (the defaults reproduce the shipped one's recipe): 32x32 images on a 16x16x12 pixel-unshuffle
latent (--patch 2), UNet widths 32/64/64, the prompt cross-attended only in the mid block (two
transformer layers, 16-channel heads) and its pooled vector added to the mid block's input, and the
skip connections at the mid block's 4x4 resolution cut: the prompt reaches the decoder only through
h-space (the mid block's output), which makes h-space edits visible. No pooled vector in the time
embedding (--pooled adds it).

Earlier layouts, kept as flags (README, "h-space directions on Shapes"): --text-at all (the
previous shipped model: cross-attention at 8x8, 4x4 and in the mid block, up path included) or
encoder, --no-mid-prompt, --coarse-skips, --head-dim 32 --deep-layers 1.
Curriculum: --single-share draws single-object scenes with that probability (text-to-image is
judged on single objects) and --p-map sets the share of samples trained with a region map.

Data: a fixed pool of 30,000 procedural scenes (half single-object, half 1-3 objects) rendered
once at 64x64 and cached with their MiniLM token states in the run directory (or --data-dir; the
text encoder is the expensive part on a CPU); images and masks are area-downsampled to the
model's 32x32 on load. Each step draws a batch of 32, drops the prompt (p=0.15) for
classifier-free guidance, gives a spatio-textual region map (p=0.5; each object's region kept
with p=0.8) built from the object masks and short object phrases, and trains x0 prediction with
a truncated-SNR weight clamp(SNR, 1, 5). AdamW at 5e-4 after a short warm-up, constant until
--decay-start (38,000), then falling linearly to 5e-5 at --steps (50,000); EMA of the weights.
The shipped weights are the EMA at step 60,000: this recipe to 50,000 (trained in resumed
segments, README), then a fine-tune aimed at the noise levels where shapes are drawn:
--resume --steps 60000 --lr 1e-4 --decay-start 55000 --lr-min-frac 0.2 --t-focus 50,600,0.7.
At --guide-step (25,000) the EMA weights are also written as generator_guide.safetensors: the
weaker model that autoguidance (backends.generative.pipeline) guides with; from then on the exported
config samples text prompts with autoguidance.

On a shared CPU, --world W runs W single-threaded worker processes that average gradients
(gloo all-reduce); one process with two threads was ~10x slower than one thread when the cores
were oversubscribed (OpenMP threads wait for each other).

Every --eval-every steps the EMA weights are exported to assets/shapes/generator.safetensors
(fp16) and scored on --eval-n held-out single-object prompts by the judge; the scores go to
runs/generator/log.jsonl (the accuracy-versus-steps curve, also stored in generator.json).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from backends.shapes.train import common_parser, load_optimizer, optimizer_tensors, progress, run_dir_for

DATA_VERSION = 2  # 2: images stored at the model's size, object boxes and background kept
RENDER_SIZE = 64


# ---------------------------------------------------------------------------------------
# Data

def encode_token_states(texts: list[str], max_len: int):
    """MiniLM token states (N, max_len, 384) fp16 and mask (N, max_len) bool, like
    TextEncoder.encode_tokens but padded per length-sorted chunk (much cheaper on a CPU)."""
    import torch

    from backends.shapes.text import _clean, get_text_encoder

    enc = get_text_encoder()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, os.cpu_count() or 1))  # a one-off cost: use every core
    try:
        return _encode_sorted(enc, [_clean(t) for t in texts], max_len)
    finally:
        torch.set_num_threads(threads)


def _encode_sorted(enc, clean: list[str], max_len: int):
    import torch

    order = sorted(range(len(clean)), key=lambda i: len(clean[i]))
    states = torch.zeros(len(clean), max_len, 384, dtype=torch.float16)
    mask = torch.zeros(len(clean), max_len, dtype=torch.bool)
    for s in range(0, len(order), 256):
        idx = order[s: s + 256]
        batch = enc.tokenizer([clean[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.inference_mode():
            h = enc.model(**batch).last_hidden_state
        m = batch["attention_mask"].bool()
        h = h * m.unsqueeze(-1)
        L = h.shape[1]
        states[idx, :L] = h.to(torch.float16)
        mask[idx, :L] = m
    return states, mask


def build_dataset(n: int, seed: int, cfg, cache_dir: Path, *, log=print) -> dict:
    """Render n scenes (+ captions, masks at latent size, token states) or load them from cache."""
    return build_chunk(n, seed, cfg, cache_dir, log=log)


def build_chunk(n: int, seed: int, cfg, cache_dir: Path, *, log=print, chunk: int | None = None) -> dict:
    """Render n scenes (+ captions, object masks at 16x16, object boxes, background, token states)
    or load them from the cache. `chunk` numbers the streamed pool's chunks (each its own scenes)."""
    import torch

    from backends.shapes import scenes
    from backends.shapes.generator import object_phrase
    from backends.shapes.text import get_text_encoder

    # Scenes are rendered at 64x64 (masks at 16x16) and area-downsampled to the model's size on
    # load: coverage-weighted rendering is linear, so this equals rendering at the smaller size.
    key = hashlib.sha1(json.dumps([DATA_VERSION, n, seed, RENDER_SIZE, RENDER_SIZE // 16, cfg.max_tokens]
                                  + ([] if chunk is None else [chunk])).encode()).hexdigest()[:10]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path = Path(cache_dir) / f"data_{key}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        d["phrases"] = json.loads(str(d["phrases"]))
        log(f"loaded {n} cached scenes from {path}")
        return adapt_dataset(d, cfg)
    t0 = time.time()
    ls = 16
    store = cfg.image_size if RENDER_SIZE % cfg.image_size == 0 else RENDER_SIZE
    f = RENDER_SIZE // store
    images = np.empty((n, store, store, 3), np.uint8)
    rmasks = np.zeros((n, 3, ls, ls), np.float16)
    rids = np.full((n, 3), -1, np.int32)
    bboxes = np.zeros((n, 3, 4), np.float32)
    bgs = np.zeros(n, np.int8)
    captions: list[str] = []
    phrases: dict[str, int] = {}
    base = seed if chunk is None else seed * 7919 + 1000003 * (chunk + 1)
    rng = np.random.default_rng(np.random.SeedSequence([0x6E4, base]))
    step = 500
    backgrounds = list(scenes.BACKGROUNDS)
    for c0 in range(0, n, step):
        m = min(step, n - c0)
        single = (c0 // step) % 2 == 0
        b = scenes.make_batch(m, seed=base * 100000 + c0 // step, split="train", size=RENDER_SIZE, single=single)
        im = b.images.astype(np.float32)
        images[c0:c0 + m] = np.round(im.reshape(m, store, f, store, f, 3).mean((2, 4))).astype(np.uint8)
        captions += b.captions
        for i, (sp, mk) in enumerate(zip(b.specs, b.masks)):
            bgs[c0 + i] = backgrounds.index(sp.background)
            mm = torch.from_numpy(mk.astype(np.float32))
            mm = torch.nn.functional.adaptive_avg_pool2d(mm, ls).numpy()
            for j, o in enumerate(sp.objects[:3]):
                ph = object_phrase(o, rng)
                rids[c0 + i, j] = phrases.setdefault(ph, len(phrases))
                rmasks[c0 + i, j] = mm[j]
                ys, xs = np.nonzero(mk[j])
                if len(xs):
                    bboxes[c0 + i, j] = (xs.min() / RENDER_SIZE, ys.min() / RENDER_SIZE,
                                         (xs.max() + 1) / RENDER_SIZE, (ys.max() + 1) / RENDER_SIZE)
    log(f"rendered {n} scenes in {time.time() - t0:.0f}s; encoding captions")
    t1 = time.time()
    states, tmask = encode_token_states(captions, cfg.max_tokens)
    phrase_list = list(phrases)
    pemb = get_text_encoder().encode_pooled(phrase_list).astype(np.float16)
    log(f"encoded {n} captions + {len(phrase_list)} region phrases in {time.time() - t1:.0f}s")
    d = dict(images=images, rmasks=rmasks, rids=rids, bboxes=bboxes, bgs=bgs, states=states.numpy(),
             tmask=tmask.numpy(), pemb=pemb, phrases=json.dumps(phrase_list), captions=np.asarray(captions))
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **d)
    tmp.replace(path)
    d["phrases"] = phrase_list
    return adapt_dataset(d, cfg)


def adapt_dataset(d: dict, cfg) -> dict:
    """Area-downsample the cached images and 16x16 region masks to the model's sizes."""
    f = d["images"].shape[1] // cfg.image_size
    if f > 1:
        im = d["images"].astype(np.float32)
        n, h, w, c = im.shape
        d["images"] = np.round(im.reshape(n, h // f, f, w // f, f, c).mean((2, 4))).astype(np.uint8)
    ls = cfg.latent_size
    rm = d["rmasks"]
    if rm.shape[-1] != ls and rm.shape[-1] > ls:
        g = rm.shape[-1] // ls
        n, r, h, w = rm.shape
        d["rmasks"] = rm.astype(np.float32).reshape(n, r, ls, g, ls, g).mean((3, 5)).astype(np.float16)
    return d


def concat_chunks(chunks: list[dict]) -> dict:
    """One pool from several chunks (region phrase ids offset into a joined phrase table)."""
    if len(chunks) == 1:
        return chunks[0]
    out: dict = {}
    offset = 0
    rids = []
    for c in chunks:
        r = c["rids"].copy()
        r[r >= 0] += offset
        rids.append(r)
        offset += len(c["pemb"])
    out["rids"] = np.concatenate(rids)
    for k in ("images", "rmasks", "states", "tmask", "pemb", "bboxes", "bgs", "captions"):
        if all(k in c for c in chunks):
            out[k] = np.concatenate([c[k] for c in chunks])
    return out


def shape_draw_weights(captions, weights: dict[str, float], *, small: dict[str, float] | None = None,
                       areas=None, single=None) -> np.ndarray | None:
    """Draw probabilities over scenes that give a scene whose caption names a shape in `weights`
    (by any of its words or its plural) that weight instead of 1 (the largest, where several are
    named): a shape the model draws worst is seen more often. `small` ({shape: w}) multiplies the
    weight of one-object scenes (`single`, bool (N,)) whose object is that shape and small: its area
    (`areas`, share of the image, (N,)) under the middle of the small and medium sizes' areas.
    None: draw uniformly."""
    from backends.shapes.region_planner import shapes_in_prompt

    if not weights and not small:
        return None
    named = [shapes_in_prompt(c) for c in captions]
    w = np.asarray([max([(weights or {})[s] for s in n if s in (weights or {})], default=1.0) for n in named], np.float64)
    for shape, k in (small or {}).items():
        if areas is None or single is None:
            raise ValueError("weighting small objects needs the scenes' object areas and which have one object")
        hit = np.asarray(single, bool) & (np.asarray(areas) < small_area(shape)) & np.asarray([shape in n for n in named])
        w[hit] *= k
    return w / w.sum()


def small_area(shape: str) -> float:
    """Share of the image below which an object of this shape counts as small: the area at the radius
    half-way between the small and the medium size."""
    import math

    from backends.shapes import scenes

    r = (scenes.SIZE_RADIUS["small"] + scenes.SIZE_RADIUS["medium"]) / 2
    if shape == "circle":
        return math.pi * r * r
    pts = np.asarray(scenes._polygon(shape, 0.0, 0.0, r, 0.0))
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def parse_shape_weights(items, flag: str = "--shape-weight") -> dict[str, float]:
    """`--shape-weight square=2` (repeatable) → {"square": 2.0}, with a clear message for a bad item."""
    from backends.shapes import scenes

    out = {}
    for item in items or []:
        shape, _, val = item.partition("=")
        if shape not in scenes.SHAPES:
            raise SystemExit(f"{flag} {item!r}: the shape has to be one of {', '.join(scenes.SHAPES)}")
        try:
            out[shape] = float(val)
        except ValueError:
            raise SystemExit(f"{flag} {item!r}: the weight has to be a number, as in square=2") from None
        if not out[shape] > 0:
            raise SystemExit(f"{flag} {item!r}: the weight has to be above 0")
    return out


class ScenePool:
    """A pool of training scenes that grows by freshly rendered chunks (rendering is free; the
    MiniLM token states are the cost, so each chunk is encoded once and cached on disk), keeping
    the newest `max_chunks`. chunk k is always the same scenes, so a resumed run rebuilds its
    pool from the cache or, on a fresh machine, by rendering again."""

    def __init__(self, cfg, cache_dir: Path, *, seed: int, chunk_size: int, max_chunks: int, log=print):
        self.cfg, self.cache_dir, self.seed, self.chunk_size = cfg, Path(cache_dir), seed, chunk_size
        self.max_chunks, self.log = max_chunks, log
        self.chunks: dict[int, dict] = {}
        self.data: dict | None = None

    def load(self, indices) -> None:
        for k in indices:
            if k not in self.chunks:
                self.chunks[k] = build_chunk(self.chunk_size, self.seed, self.cfg, self.cache_dir, log=self.log, chunk=k)
        for k in sorted(self.chunks)[:-self.max_chunks]:
            del self.chunks[k]
        self.data = concat_chunks([self.chunks[k] for k in sorted(self.chunks)])

    @property
    def next_chunk(self) -> int:
        return max(self.chunks) + 1 if self.chunks else 0


# ---------------------------------------------------------------------------------------
# Loss

def training_loss(gen, sched_alphas, batch: dict, rng: np.random.Generator, *, p_drop_prompt=0.15, p_map=0.5,
                  t_focus: tuple[float, float, float] | None = None,
                  p_keep_region=0.8, snr_clip=(1.0, 5.0), empty=None, bf16: bool = False):
    """One batch's loss. batch: images uint8 (B,H,W,3), states fp16 (B,L,D), tmask (B,L),
    rmasks (B,3,h,w), remb (B,3,D), rvalid (B,3) bool. The batch goes to the UNet's device (and
    `sched_alphas`, `empty` are expected there); bf16: the UNet runs under bfloat16 autocast.
    Returns (loss tensor, info dict)."""
    import torch

    from backends.shapes.generator import pool_states

    cfg = gen.config
    dev = next(gen.unet.parameters()).device
    B = len(batch["images"])
    x0 = gen.codec.encode(gen.codec.images_to_tensor(batch["images"]).to(dev))
    states = torch.from_numpy(batch["states"]).to(dev).float()
    tmask = torch.from_numpy(batch["tmask"]).to(dev).clone()
    drop = rng.random(B) < p_drop_prompt
    if drop.any():
        es, em = empty
        states[drop] = es
        tmask[drop] = em
    pooled = pool_states(states, tmask)
    if "use_map" in batch:  # regions already drawn by painted_batch (rough areas, caption swaps)
        keep = batch["keep"]
    else:
        use_map = rng.random(B) < p_map
        use_map &= ~(drop & (rng.random(B) < 0.67))
        keep = (rng.random((B, 3)) < p_keep_region) & use_map[:, None] & batch["rvalid"]
    masks = torch.from_numpy(batch["rmasks"]).to(dev).float() * torch.from_numpy(keep).to(dev).float()[:, :, None, None]
    smap = gen.spatext(masks, torch.from_numpy(batch["remb"]).to(dev).float(), cfg.latent_size)
    t = rng.integers(0, cfg.num_train_timesteps, size=B)
    if t_focus is not None:  # (lo, hi, p): with probability p, t from [lo, hi) instead
        lo, hi, p = t_focus
        t = np.where(rng.random(B) < p, rng.integers(int(lo), int(hi), size=B), t)
    t = torch.from_numpy(t).long().to(dev)
    ab = sched_alphas[t].view(B, 1, 1, 1)
    noise = torch.from_numpy(rng.standard_normal(tuple(x0.shape)).astype(np.float32)).to(dev)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    kw = {"class_labels": pooled} if cfg.pooled_conditioning else {}
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        pred = gen.unet(torch.cat([xt, smap], 1), t, states, encoder_attention_mask=tmask, **kw).sample
    pred = pred.float()
    snr = ab / (1 - ab)
    w = snr.clamp(*snr_clip).view(B)
    per = ((pred - x0) ** 2).mean(dim=(1, 2, 3))
    loss = (w * per).mean()
    return loss, {"mse_x0": float(per.detach().mean())}


def get_batch(data: dict, idx: np.ndarray) -> dict:
    rids = data["rids"][idx]
    valid = rids >= 0
    remb = data["pemb"][np.where(valid, rids, 0)].astype(np.float32) * valid[..., None]
    out = dict(images=data["images"][idx], states=data["states"][idx], tmask=data["tmask"][idx],
               rmasks=data["rmasks"][idx], remb=remb, rvalid=valid)
    for k in ("bboxes", "bgs"):
        if k in data:
            out[k] = data[k][idx]
    return out


BACKGROUND_TEMPLATES = ("on a {} background", "a {} background", "{} background", "against a {} backdrop")


def background_prompts(max_len: int):
    """Token states of short background-only prompts, per background: {bg index: (states, mask)}
    with states (K, L, D) fp16 and mask (K, L), K wordings each."""
    from backends.shapes import scenes

    out = {}
    for i, bg in enumerate(scenes.BACKGROUNDS):
        texts = [t.format(w) for w in scenes.BACKGROUND_WORDS[bg] for t in BACKGROUND_TEMPLATES]
        st, m = encode_token_states(texts, max_len)
        out[i] = (st.numpy(), m.numpy())
    return out


def painted_batch(batch: dict, rng: np.random.Generator, *, p_map: float, p_rough: float, size: int,
                  bg_prompts: dict | None = None, p_caption=(0.5, 0.3, 0.2), p_keep_region: float = 0.8,
                  empty=None) -> dict:
    """Choose which samples train with a region map and draw their regions as a person paints them.

    With a map, a sample's regions are rough areas (painted.sample_rough_regions: boxes, ellipses,
    brush blobs, dilated masks; with probability p_rough) or the exact silhouettes, and its prompt
    is the full caption, a background-only prompt, or empty (p_caption), so the model learns that
    the map says where and the region's words say what. Without a map nothing changes.
    Sets batch["use_map"], batch["keep"] (B, 3) and region masks at `size`."""
    from backends.shapes import painted

    B = len(batch["images"])
    valid = batch["rvalid"]
    use_map = rng.random(B) < p_map
    rough = use_map & (rng.random(B) < p_rough) & ("bboxes" in batch)
    cap = rng.choice(3, size=B, p=np.asarray(p_caption) / np.sum(p_caption))
    masks = np.zeros((B, 3, size, size), np.float32)
    keep = np.zeros((B, 3), bool)
    states, tmask = batch["states"].copy(), batch["tmask"].copy()
    for i in range(B):
        if not use_map[i]:
            continue
        n = int(valid[i].sum())
        if cap[i] == 0:  # the full caption describes every object: some regions may be left out
            keep[i, :n] = rng.random(n) < p_keep_region
        else:  # the objects are described only by their regions: all of them are painted
            keep[i, :n] = True
            if cap[i] == 1 and bg_prompts is not None and "bgs" in batch:
                st, m = bg_prompts[int(batch["bgs"][i])]
                k = int(rng.integers(len(st)))
                states[i], tmask[i] = st[k], m[k]
            elif empty is not None:
                states[i], tmask[i] = empty[0].cpu().numpy().astype(states.dtype), empty[1].cpu().numpy()
        if rough[i]:
            masks[i, :n] = painted.sample_rough_regions(batch["bboxes"][i, :n], batch["rmasks"][i, :n].astype(np.float32),
                                                        rng, size)
        else:
            masks[i, :n] = painted.upsample(batch["rmasks"][i, :n].astype(np.float32), size)
    return {**batch, "rmasks": masks, "keep": keep, "use_map": use_map, "states": states, "tmask": tmask}


# ---------------------------------------------------------------------------------------
# Evaluation during training (quick; eval_generator has the full suite)

def quick_eval(gen, n: int = 48, steps: int = 20, guidance: float | None = None, seed: int = 1, *,
               guide=None, method: str = "cfg", n_regions: int = 0) -> dict:
    """Sample n held-out single-object canonical prompts with the pipeline (the model's own guidance
    scale and DDIM eta unless given; method "auto" needs `guide`, a weaker ShapesGenerator) and
    score them, per shape too; with n_regions, also that many user-like painted layouts."""
    import torch

    from backends.generative.pipeline import LatentDiffusionPipeline
    from backends.shapes import eval_generator, scenes
    from backends.shapes.text import get_text_encoder

    b = scenes.make_batch(n, seed=seed, split="val", single=True, size=8)
    prompts = [scenes.canonical_caption(s) for s in b.specs]
    pipe = LatentDiffusionPipeline(unet=gen.unet, scheduler=gen.make_scheduler(), codec=gen.codec,
                                   text_encoder=get_text_encoder(), spatext=gen.spatext,
                                   max_tokens=gen.config.max_tokens,
                                   guide_unet=guide.unet if (guide is not None and method == "auto") else None)
    g = torch.Generator().manual_seed(seed)
    guidance = gen.config.guidance_scale if guidance is None else guidance
    imgs = np.concatenate([pipe(prompts[s:s + 50], guidance_scale=guidance, num_inference_steps=steps, generator=g,
                                output_type="np", eta=gen.config.eta, guidance_method=method).images
                           for s in range(0, n, 50)])  # the pipeline takes at most 64 prompts a call
    rec = eval_generator.score_single(imgs, b.specs)
    rec["method"] = method
    if n_regions:
        r = eval_generator.eval_user_regions(pipe, n_regions, steps=steps, seed=seed, eta=gen.config.eta,
                                             guidance=gen.config.region_guidance_scale or guidance)
        rec["user_regions"] = {k: r[k] for k in ("joint", "inside", "background", "per_shape") if k in r}
    return rec


def eval_curve(log_path: Path) -> list[dict]:
    """The accuracy-versus-steps curve from the run's JSONL log (eval events)."""
    out = []
    if Path(log_path).exists():
        for line in Path(log_path).read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("event") == "eval" and "eval_error" not in r:
                out.append({k: r[k] for k in ("step", "time_s", "joint", "shape", "colour", "n", "scorer", "method",
                                              "per_shape", "user_regions", "geometric") if k in r})
    return out


# ---------------------------------------------------------------------------------------

TEXT_AT = {  # --text-at: (down_block_types, up_block_types or None for the mirror), by number of levels
    "all": lambda n: (("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1), None),
    "encoder": lambda n: (("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1), ("UpBlock2D",) * n),
    "bottleneck": lambda n: (("DownBlock2D",) * n, None),
}


def swap_step(gen, alphas, data: dict, rng: np.random.Generator, k: int, **kw):
    """The h-swap loss (backends/shapes/colour_twins.py) on k one-object scenes of the pool and their twins."""
    from backends.shapes.colour_twins import colour_twins, swap_h_loss
    from backends.shapes.text import _clean, get_text_encoder

    single = np.nonzero((data["rids"] >= 0).sum(1) == 1)[0]
    idx = rng.choice(single, size=k, replace=False)
    twins, caps, ok = colour_twins(data["images"][idx], data["captions"][idx], data["bgs"][idx], rng)
    idx, twins, caps = idx[ok], twins[ok], [c for c, o in zip(caps, ok) if o]
    b_states, b_mask = _encode_sorted(get_text_encoder(), [_clean(c) for c in caps], data["states"].shape[1])
    return swap_h_loss(gen, alphas, data["images"][idx], twins, data["states"][idx], data["tmask"][idx],
                       b_states, b_mask, rng, **kw)


def learning_rate(step: int, args) -> float:
    """Linear warm-up, constant, then (with --decay-start) a linear fall to lr_min_frac * lr at --steps."""
    lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
    if args.decay_start is not None and 0 <= args.decay_start <= step and args.steps > args.decay_start:
        frac = min(1.0, (step - args.decay_start) / (args.steps - args.decay_start))
        lr *= 1.0 - (1.0 - args.lr_min_frac) * frac
    return lr


def main(argv: list[str] | None = None) -> int:
    p = common_parser("python -m backends.shapes.train generator", steps=50000, batch=32)
    p.set_defaults(threads=2, eval_every=1000, ckpt_every=250)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--decay-start", type=int, default=38000,
                   help="from this step the learning rate falls linearly to --lr-min-frac of --lr at --steps "
                        "(default 38,000; -1: constant, so a run can be extended. At a constant 5e-4 the shipped "
                        "model's validation score fell from 0.47 at 30k to 0.39 at 37.5k; the decay recovered it)")
    p.add_argument("--lr-min-frac", type=float, default=0.1)
    p.add_argument("--snr-max", type=float, default=5.0, help="x0-loss weight is clamp(SNR, 1, snr_max)")
    p.add_argument("--p-map", type=float, default=0.5,
                   help="share of samples trained with a spatio-textual region map (default 0.5)")
    p.add_argument("--t-focus", default=None, metavar="LO,HI,P",
                   help="draw the training timestep from [LO, HI) with probability P (else uniformly): a fine-tune "
                        "aimed at the noise levels where shapes are drawn")
    p.add_argument("--single-share", type=float, default=None,
                   help="draw single-object scenes with this probability (default: uniformly from the pool, "
                        "where half the scenes have one object)")
    p.add_argument("--shape-weight", action="append", default=None, metavar="SHAPE=W",
                   help="draw scenes whose caption names SHAPE W times as often (repeatable; e.g. square=2 for a "
                        "shape the model draws worst)")
    p.add_argument("--small-weight", action="append", default=None, metavar="SHAPE=W",
                   help="on top of --shape-weight, draw one-object scenes of a small SHAPE W times as often "
                        "(repeatable; e.g. square=3: small squares were the ones drawn as blobs)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--guide-step", type=int, default=25000,
                   help="save the EMA weights of this step as the autoguidance guide model (generator_guide.*, "
                        "default 25,000: half-way; 0: none). The exported model then samples with autoguidance")
    p.add_argument("--guidance-scale", type=float, default=3.5,
                   help="the exported model's default guidance scale (default 3.5, measured best for both methods)")
    p.add_argument("--region-guidance-scale", type=float, default=2.5,
                   help="the exported model's default guidance with a region map (default 2.5, measured best)")
    p.add_argument("--directions-halves", default="cond,cond", metavar="RECORD,DELTA",
                   help="the guidance halves the Directions tab starts with for this model: h read from "
                        "(uncond|cond), Δh added to (both|cond); default cond,cond (measured, README)")
    p.add_argument("--n-scenes", type=int, default=30000,
                   help="the fixed scene pool's size (default 30,000), unless --stream-chunks is given")
    p.add_argument("--stream-chunks", type=int, default=0, metavar="K",
                   help="a growing pool instead: chunks of --chunk-size fresh scenes, a new one every --new-chunk-every "
                        "steps, the newest K kept (default 0: the fixed pool)")
    p.add_argument("--chunk-size", type=int, default=10000)
    p.add_argument("--new-chunk-every", type=int, default=2000)
    p.add_argument("--p-rough", type=float, default=0.0,
                   help="share of region-map samples whose regions are rough painted areas (boxes, ellipses, brush "
                        "blobs, dilated masks) instead of silhouettes, with the caption swapped for a background-only "
                        "or empty prompt half the time (default 0: silhouettes, the full caption)")
    p.add_argument("--swap-pairs", type=int, default=0, metavar="K",
                   help="each step, also K one-object scenes and their colour twins with their h swapped, each asked "
                        "for its twin's image (backends/shapes/colour_twins.py): trains the decoder to take colour "
                        "from h (8 pairs from 160k: colour -> blue at 2x its strength turned 86%% of sources blue, "
                        "10%% before; docs/directions.md) (default 0: off)")
    p.add_argument("--swap-weight", type=float, default=1.0, help="weight of the h-swap loss (default 1)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start a new run from these generator weights (a shipped generator.safetensors) instead of "
                        "random ones; its config must match the flags")
    p.add_argument("--eval-regions", type=int, default=0,
                   help="user-like painted layouts in each quick eval (default 0)")
    p.add_argument("--eval-method", choices=("model", "cfg"), default="cfg",
                   help="the quick eval samples with the model's own guidance (model: autoguidance once a guide "
                        "exists) or classifier-free (cfg, as the older curves)")
    p.add_argument("--eval-n", type=int, default=48)
    p.add_argument("--small", action="store_true", help="a tiny UNet (tests)")
    p.add_argument("--patch", type=int, default=2, help="pixel-unshuffle factor of the latent (default 2: 16x16x12)")
    p.add_argument("--channels", default="32,64,64", help="UNet block widths, comma-separated (default 32,64,64)")
    p.add_argument("--pooled", action="store_true",
                   help="also add the pooled prompt vector to the time embedding (default off: the prompt reaches "
                        "the UNet only by cross-attention at the coarse levels and the mid block)")
    p.add_argument("--text-at", choices=sorted(TEXT_AT), default="bottleneck",
                   help="where the UNet cross-attends to the prompt: 'all' (coarse down blocks, mid block, coarse up "
                        "blocks), 'encoder' (coarse down blocks and the mid block), 'bottleneck' (the mid block only, so "
                        "the prompt reaches the decoder only through h-space; the default)")
    p.add_argument("--mid-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="add the projected pooled prompt to the mid block's input (reaches the decoder only through h; "
                        "default on)")
    p.add_argument("--coarse-skips", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the skip connections at the mid block's resolution (default off: they carry zeros, so the "
                        "decoder reads that level only from h)")
    p.add_argument("--head-dim", type=int, default=16, help="channels per attention head (default 16)")
    p.add_argument("--deep-layers", type=int, default=2,
                   help="transformer layers in the mid block (and the coarsest cross-attending blocks; default 2)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the rendered + encoded training scenes are cached (default: the run directory)")
    p.add_argument("--world", type=int, default=1,
                   help="data-parallel worker processes (1 thread each; gradients all-reduced over gloo). "
                        "On a shared CPU each process gets its own share of the cores")
    p.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=29533, help=argparse.SUPPRESS)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where to train (default cpu, the reproducible path; auto: cuda when torch sees a GPU). "
                        "Checkpoints, exports and the quick eval are on the CPU either way")
    p.add_argument("--bf16", action="store_true", help="run the UNet under bfloat16 autocast (for a GPU)")
    p.add_argument("--export-only", action="store_true",
                   help="write the last checkpoint's EMA weights (+ the eval curve) to --out and stop")
    args = p.parse_args(argv)

    if args.world > 1 and args.rank is None:
        return _launch_workers(args, argv)
    rank = args.rank or 0
    main_rank = rank == 0

    import copy

    import torch

    from backends.shapes.generator import (
        GeneratorConfig,
        build_generator,
        generator_state_dict,
        load_generator_state,
        save_generator,
    )
    from backends.shapes.text import get_text_encoder

    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    run = run_dir_for(args, "generator")
    dist = None
    if args.world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=args.world)
    cfg = GeneratorConfig()
    if args.patch is not None:
        cfg.patch = args.patch
    if args.channels:
        cfg.block_out_channels = tuple(int(c) for c in args.channels.split(","))
        if len(cfg.block_out_channels) < 2:
            p.error(f"--channels needs at least 2 widths, got {args.channels!r}")
    cfg.pooled_conditioning = bool(args.pooled)
    cfg.down_block_types, cfg.up_block_types = TEXT_AT[args.text_at](len(cfg.block_out_channels))
    cfg.head_dim, cfg.deep_transformer_layers = args.head_dim, args.deep_layers
    cfg.mid_prompt = bool(args.mid_prompt)
    cfg.coarse_skips = bool(args.coarse_skips)
    if args.small:
        cfg = GeneratorConfig(block_out_channels=(16, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                              head_dim=16, norm_num_groups=4, spatext_channels=4)
    from backends.errors import InputError
    from backends.generative.hspace import check_edit_half, check_record_half

    directions_halves = tuple(args.directions_halves.split(","))
    try:
        if len(directions_halves) != 2:
            raise InputError("it needs two values")
        check_record_half(directions_halves[0])
        check_edit_half(directions_halves[1])
    except InputError as exc:
        raise SystemExit(f"--directions-halves has to be RECORD,DELTA, but is {args.directions_halves!r}: {exc}") from None
    t_focus = None  # checked before any data is built
    if args.t_focus:
        try:
            lo, hi, pf = (float(v) for v in args.t_focus.split(","))
        except ValueError:
            raise SystemExit(f"--t-focus has to be LO,HI,P (e.g. 50,600,0.7), but is {args.t_focus!r}") from None
        if not (0 <= lo < hi <= cfg.num_train_timesteps and 0 <= pf <= 1):
            raise SystemExit(f"--t-focus needs 0 <= LO < HI <= {cfg.num_train_timesteps} and 0 <= P <= 1, "
                             f"but is {args.t_focus!r}")
        t_focus = (lo, hi, pf)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU here (use --device cpu or auto)")
    if device == "cuda" and args.world > 1:
        raise SystemExit("--world > 1 is the CPU data-parallel path; on a GPU use one process and a larger --batch")
    gen = build_generator(cfg, seed=args.seed)
    ema = copy.deepcopy(gen)
    for prm in ema.parameters():
        prm.requires_grad_(False)
    for m in gen.modules() + ema.modules():  # before the optimiser: its (resumed) state follows the params
        m.to(device)
    params = gen.parameters()
    n_params = sum(x.numel() for x in params)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))

    step = 0
    if args.init_from is not None and not (args.resume and run.load() is not None):
        from safetensors.torch import load_file

        from backends.shapes.generator import GeneratorConfig as _GC

        init_cfg_path = Path(args.init_from).with_suffix(".json")
        if init_cfg_path.exists():
            init_cfg = _GC.from_json(init_cfg_path.read_text())
            fields = ("image_size", "patch", "block_out_channels", "down_block_types", "head_dim",
                      "deep_transformer_layers", "mid_prompt", "coarse_skips", "pooled_conditioning", "spatext_channels")
            bad = [f for f in fields if getattr(init_cfg, f) != getattr(cfg, f)]
            if bad:
                raise SystemExit(f"--init-from {args.init_from}: its config differs from the flags in {', '.join(bad)}")
        init = load_file(str(args.init_from))
        load_generator_state(gen, init)
        load_generator_state(ema, init)
        print(f"initialised from {args.init_from}", file=sys.stderr)
    if args.resume or args.export_only:
        ck = run.load()
        if ck is not None:
            step, tensors, state = ck
            load_generator_state(gen, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            load_generator_state(ema, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
            load_optimizer(opt, tensors, state["optimizer"])
            print(f"resumed from step {step}", file=sys.stderr)

    guide_file = Path(args.out) / "generator_guide.safetensors"

    def on_cpu(g):
        """g itself on the CPU, else a CPU copy (the sampling pipeline and the quick eval run there)."""
        if device == "cpu":
            return g
        c = copy.deepcopy(g)
        for m in c.modules():
            m.to("cpu")
        return c

    def set_guidance(config) -> None:
        """The exported model samples with autoguidance once its guide has been written."""
        has_guide = guide_file.exists()
        config.guidance_method = "auto" if has_guide else "cfg"
        config.guide_weights = guide_file.name if has_guide else None
        config.guidance_scale = args.guidance_scale
        config.region_guidance_scale = args.region_guidance_scale
        config.directions_record_half, config.directions_delta_half = directions_halves

    if args.export_only:
        if step == 0:
            print("no checkpoint to export", file=sys.stderr)
            return 2
        set_guidance(ema.config)
        ema.config.trained_steps = step
        ema.config.metrics = {**ema.config.metrics, "curve": eval_curve(run.log_path)}
        save_generator(ema, Path(args.out) / "generator.safetensors")
        print(f"exported EMA weights of step {step} to {args.out}", file=sys.stderr)
        return 0

    if dist is not None and not main_rank:
        dist.barrier()  # rank 0 renders and caches the data first
    logf = lambda s: print(s, file=sys.stderr)  # noqa: E731
    pool = None
    if args.stream_chunks > 0:
        if args.world > 1:
            raise SystemExit("--stream-chunks runs in one process (--world 1)")
        pool = ScenePool(cfg, args.data_dir or run.path, seed=args.seed, chunk_size=args.chunk_size,
                         max_chunks=args.stream_chunks, log=logf)
        state_path = run.path / "checkpoint.json"
        next_chunk = json.loads(state_path.read_text()).get("next_chunk", 0) if (args.resume and state_path.exists()) else 0
        first = max(1, min(3, args.stream_chunks))  # a resumed run starts from its newest chunks
        pool.load(range(max(0, next_chunk - first), max(next_chunk, first)))
        data = pool.data
    else:
        data = build_dataset(args.n_scenes, args.seed, cfg, args.data_dir or run.path, log=logf)
    if dist is not None and main_rank:
        dist.barrier()
    es, em = get_text_encoder().encode_tokens([""], max_len=cfg.max_tokens)
    empty = (es[0].to(device), em[0].to(device))
    bg_prompts = background_prompts(cfg.max_tokens) if args.p_rough > 0 else None
    N = len(data["images"])

    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                           beta_schedule=cfg.beta_schedule).alphas_cumprod.float().to(device)
    if main_rank:
        run.log(step, event="start", params=n_params, n_scenes=N, batch=args.batch, world=args.world, lr=args.lr, snr_max=args.snr_max,
                device=device, bf16=bool(args.bf16),
                config=json.loads(cfg.to_json()))
    if dist is not None:  # identical starting weights on every worker
        flat = torch.nn.utils.parameters_to_vector(params).detach()
        dist.broadcast(flat, 0)
        torch.nn.utils.vector_to_parameters(flat, params)
    # A fresh stream per resumed segment (and worker) keeps runs reproducible from the same checkpoint.
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, step] + ([rank] if args.world > 1 else [])))
    bar = progress(args.steps, step, "generator", args.no_progress or not main_rank)
    ema_params = ema.parameters()
    gen.unet.train()
    t_last = time.time()
    losses = []

    def export_guide():
        guide = copy.deepcopy(on_cpu(ema))
        guide.config.trained_steps = step
        guide.config.metrics = {}
        guide.config.guidance_method, guide.config.guide_weights = "cfg", None
        save_generator(guide, guide_file)
        run.log(step, event="guide", path=str(guide_file))

    def export_and_eval():
        ema.config.trained_steps = step
        set_guidance(ema.config)
        rec = {}
        model = on_cpu(ema)
        try:
            model.unet.eval()
            guide = None
            method = "cfg"
            if args.eval_method == "model" and guide_file.exists():
                from backends.shapes.generator import load_generator as _load

                guide, method = _load(guide_file), "auto"
            rec = quick_eval(model, n=args.eval_n, guide=guide, method=method, n_regions=args.eval_regions)
        except Exception as exc:  # evaluation must never stop training
            rec = {"eval_error": f"{type(exc).__name__}: {exc}"[:300]}
        ema.config.metrics = model.config.metrics = {"quick_eval": rec, "step": step, "curve": eval_curve(run.log_path)}
        save_generator(model, Path(args.out) / "generator.safetensors")
        run.log(step, event="eval", **rec)
        return rec

    draw_p = None
    if args.single_share is not None and pool is not None:
        raise SystemExit("--single-share works on the fixed pool, not with --stream-chunks")
    if args.single_share is not None:
        if not 0 < args.single_share < 1:
            raise SystemExit(f"--single-share has to be between 0 and 1, but is {args.single_share}")
        single = (data["rids"] >= 0).sum(1) == 1
        draw_p = np.where(single, args.single_share / max(1, single.sum()), (1 - args.single_share) / max(1, (~single).sum()))
        draw_p /= draw_p.sum()  # a pool with only one kind of scene is drawn uniformly
    shape_weights = parse_shape_weights(args.shape_weight)
    small_weights = parse_shape_weights(args.small_weight, flag="--small-weight")
    if (shape_weights or small_weights) and draw_p is not None:
        raise SystemExit("--shape-weight / --small-weight and --single-share cannot be combined")

    def reweight():
        if "captions" not in data:
            raise SystemExit("--shape-weight needs the scenes' captions in the data cache")
        single = (data["rids"] >= 0).sum(1) == 1
        areas = data["rmasks"][:, 0].astype(np.float32).reshape(len(single), -1).mean(1)
        p = shape_draw_weights(data["captions"], shape_weights, small=small_weights, areas=areas, single=single)
        if p is not None:
            run.log(step, event="draw", weights=shape_weights, small=small_weights,
                    share=round(float(p[p > p.min()].sum()) if p.max() > p.min() else 1.0, 4))
        return p

    shape_weights = shape_weights or small_weights  # either one reweights the draws
    if shape_weights:
        draw_p = reweight()
    while step < args.steps:
        lr = learning_rate(step, args)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        if pool is not None and step > 0 and step % args.new_chunk_every == 0 and pool.next_chunk not in pool.chunks:
            pool.load([pool.next_chunk])
            data, N = pool.data, len(pool.data["images"])
            run.log(step, event="chunk", chunks=sorted(pool.chunks), n_scenes=N)
            if shape_weights:
                draw_p = reweight()
        idx = rng.integers(0, N, size=args.batch) if draw_p is None else rng.choice(N, size=args.batch, p=draw_p)
        batch = get_batch(data, idx)
        if args.p_rough > 0:
            batch = painted_batch(batch, rng, p_map=args.p_map, p_rough=args.p_rough, size=cfg.image_size,
                                  bg_prompts=bg_prompts, empty=empty)
        loss, info = training_loss(gen, alphas, batch, rng, empty=empty, snr_clip=(1.0, args.snr_max),
                                   p_map=args.p_map, t_focus=t_focus, bf16=args.bf16)
        if args.swap_pairs > 0:
            sloss, sinfo = swap_step(gen, alphas, data, rng, args.swap_pairs, snr_clip=(1.0, args.snr_max),
                                     t_focus=t_focus)
            loss = loss + args.swap_weight * sloss
            info.update(sinfo)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if dist is not None:  # average gradients over workers (one flat all-reduce)
            grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in params]
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= args.world
            o = 0
            for q in params:
                k = q.numel()
                q.grad = flat[o:o + k].view_as(q)
                o += k
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, d)
            torch._foreach_add_(ema_params, [q.detach() for q in params], alpha=1 - d)
        losses.append(float(loss.detach()))
        bar.update(1)
        if not main_rank:
            continue
        if step % 50 == 0 or step == args.steps:
            dt = time.time() - t_last
            t_last = time.time()
            run.log(step, loss=float(np.mean(losses)), grad_norm=float(gn), lr=lr, s_per_step=round(dt / 50, 3), **info)
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            losses = []
        if step % args.ckpt_every == 0 or step == args.steps:
            ot, om = optimizer_tensors(opt)
            # Adam's moments in bf16 (torch casts them back to the parameters' fp32 on load): the committed
            # resumable state stays under 20 MB (21.6 -> 16.2 MB for the shipped layout)
            ot = {k: (v.to(torch.bfloat16) if v.is_floating_point() and v.dim() > 0 else v) for k, v in ot.items()}
            tensors = {f"model.{k}": v for k, v in generator_state_dict(gen).items()}
            tensors.update({f"ema.{k}": v for k, v in generator_state_dict(ema).items()})
            tensors.update(ot)
            run.save(step, tensors, {"optimizer": om, **({"next_chunk": pool.next_chunk} if pool is not None else {})})
        if step == args.guide_step:
            export_guide()
        if step % args.eval_every == 0 or step == args.steps:
            rec = export_and_eval()
            bar.write(f"step {step}: {rec}")
    bar.close()
    if dist is not None:
        dist.destroy_process_group()
    return 0


def _launch_workers(args, argv) -> int:
    """Start --world worker processes of this command (rank 0 logs, checkpoints and evaluates)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "generator":
        argv = argv[1:]
    procs = []
    for r in range(args.world):
        cmd = [sys.executable, "-m", "backends.shapes.train_generator", *argv, "--rank", str(r)]
        procs.append(subprocess.Popen(cmd, env=dict(os.environ)))
    import signal

    def stop(signum, frame):  # stopping the launcher stops its workers
        for pr in procs:
            pr.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    rc = 0
    for pr in procs:
        rc = pr.wait() or rc
    return rc


if __name__ == "__main__":
    sys.exit(main())
