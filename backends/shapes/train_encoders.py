"""Train the contrastive image encoders: python -m backends.shapes.train encoders [--only shapes-cnn] ...

Data: a pool of train-split scenes (half single-object, half 1-3 objects) rendered at 32x32, each
with two captions of varied wording embedded once by the frozen MiniLM (cached in
runs/encoders/pool_*.npz). Loss: symmetric InfoNCE between image embeddings and projected caption
embeddings with a learned temperature (CLIP). Each step picks one of the two captions per image.

Hard-negative batches: with random batches, colour, position, size and background already tell
the 128 captions of a batch apart, and shape is never learned (measured: zero-shot shape stayed at
chance, 23%, after 500 steps while caption recall@10 was 0.97). So half of each batch is made of
groups of single-object scenes that share colour, size and position and differ in shape.
That alone did not help within 500 steps (shape linear-probe accuracy of the image embedding 32%,
caption embeddings of "a red circle" / "a red square" at cosine 0.90), so the image tower also gets
an auxiliary factor-classification loss (linear heads on the image embedding; shape, colour, size,
position of single-object scenes, weight --aux). The heads are not part of the shipped encoder.
"""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np

from backends.shapes import scenes
from backends.shapes.encoders import (
    CONFIGS,
    EncoderConfig,
    ImageEncoder,
    build_model,
    preprocess,
    save_encoder,
    weights_path,
)
from backends.shapes.train import RunDir, common_parser, load_optimizer, optimizer_tensors, progress, run_dir_for

DEFAULT_STEPS = {"cnn": 1500, "vit": 3000}


def build_pool(n: int, *, seed: int, split: str = "train", size: int = 32, captions_per_scene: int = 2,
               cache_dir: Path | None = None, verbose: bool = True) -> dict[str, np.ndarray]:
    """images uint8 (n, size, size, 3) and text float16 (n, captions_per_scene, 384); cached as .npz."""
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"pool_{split}_{n}_{seed}_{size}_{captions_per_scene}.npz"
        if cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                pool = {k: z[k] for k in z.files}
            if "shape" not in pool:  # older cache: the scenes are deterministic, rebuild the labels
                half = n // 2
                specs = (scenes.make_batch(half, seed=seed, split=split, size=8, single=True).specs
                         + scenes.make_batch(n - half, seed=seed + 1, split=split, size=8).specs)
                pool.update(_labels(specs))
            return pool
    from backends.shapes.text import get_text_encoder

    half = n // 2
    b1 = scenes.make_batch(half, seed=seed, split=split, size=size, single=True)
    b2 = scenes.make_batch(n - half, seed=seed + 1, split=split, size=size)
    images = np.concatenate([b1.images, b2.images])
    specs = b1.specs + b2.specs
    caps = [b1.captions + b2.captions]
    rng = np.random.default_rng([seed, 77])
    for _ in range(captions_per_scene - 1):
        caps.append([scenes.caption(s, rng) for s in specs])
    enc = get_text_encoder()
    flat = [c for cs in caps for c in cs]
    vecs = []
    step = 2048
    for s in range(0, len(flat), step):
        vecs.append(enc.encode_pooled(flat[s: s + step]))
        if verbose:
            print(f"  embedded {min(s + step, len(flat))}/{len(flat)} captions", flush=True)
    text = np.concatenate(vecs).reshape(captions_per_scene, n, -1).transpose(1, 0, 2).astype(np.float16)
    pool = {"images": images, "text": text, **_labels(specs)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **pool)
        tmp.replace(cache)
    return pool


def _labels(specs) -> dict[str, np.ndarray]:
    """Factor indices of the first object (and n_objects) per scene, for batch construction."""
    o = [sp.objects[0] for sp in specs]
    return {
        "shape": np.array([scenes.SHAPES.index(x.shape) for x in o], np.int16),
        "colour": np.array([list(scenes.COLOURS).index(x.colour) for x in o], np.int16),
        "size": np.array([scenes.SIZES.index(x.size) for x in o], np.int16),
        "position": np.array([scenes.POSITIONS.index(x.position) for x in o], np.int16),
        "n_objects": np.array([len(sp.objects) for sp in specs], np.int16),
    }


def sample_batch(pool: dict, rng: np.random.Generator, batch: int, *, group: int = 8, hard: float = 0.5) -> np.ndarray:
    """Indices: a `hard` share in groups of `group` single-object scenes with the same colour, size
    and position (so only shape tells them apart), the rest uniformly at random."""
    n = len(pool["images"])
    if "shape" not in pool or batch < 2 * group:
        return rng.choice(n, size=min(batch, n), replace=False)
    single = np.flatnonzero(pool["n_objects"] == 1)
    key = (pool["colour"].astype(np.int64) * 3 + pool["size"]) * 9 + pool["position"]
    chosen: list[int] = []
    for _ in range(int(batch * hard) // group):
        a = single[rng.integers(len(single))]
        same = single[key[single] == key[a]]
        chosen += list(rng.choice(same, size=min(group, len(same)), replace=False))
    chosen = list(dict.fromkeys(chosen))
    rest = rng.choice(n, size=batch, replace=False)
    rest = [i for i in rest if i not in set(chosen)][: batch - len(chosen)]
    return np.asarray(chosen + rest)


def clip_loss(img, txt, logit_scale):
    import torch
    import torch.nn.functional as F

    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    logits = logit_scale.clamp(max=math.log(100)).exp() * img @ txt.T
    target = torch.arange(len(img))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def train_one(name: str, args, pool: dict, val_seed: int = 0) -> dict:
    import torch
    import torch.nn.functional as F

    from backends.shapes.eval import eval_encoder
    from backends.shapes.train_judge import augment

    base = CONFIGS[name]
    cfg = EncoderConfig.from_json(base.to_json())
    args = copy.copy(args)
    args.steps = args.steps or DEFAULT_STEPS[cfg.arch]
    seed = cfg.seed + 1000 * args.seed
    torch.manual_seed(seed)
    model = build_model(cfg)
    heads = {"shape": len(scenes.SHAPES), "colour": len(scenes.COLOURS), "size": len(scenes.SIZES), "position": len(scenes.POSITIONS)}
    aux = torch.nn.ModuleDict({k: torch.nn.Linear(cfg.dim, v) for k, v in heads.items()})
    peak = args.lr or (2e-3 if cfg.arch == "cnn" else 1.5e-3)
    opt = torch.optim.AdamW(list(model.parameters()) + list(aux.parameters()), lr=peak, weight_decay=0.05)
    run = RunDir(Path(args.runs) / f"encoder_{cfg.arch}") if args.runs else run_dir_for(args, f"encoder_{cfg.arch}")
    warmup = min(150, max(1, args.steps // 10))

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    start = 0
    if args.resume and (ck := run.load()) is not None:
        start, tensors, state = ck
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        aux.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("aux.")})
        load_optimizer(opt, tensors, state["optimizer"])
        print(f"resumed {name} at step {start}")

    images, text = pool["images"], pool["text"]
    bar = progress(args.steps, start, name, args.no_progress)
    ema = None
    for step in range(start, args.steps):
        model.train()
        rng = np.random.default_rng([seed, step])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = sample_batch(pool, rng, args.batch)
        which = rng.integers(text.shape[1], size=len(idx))
        x = augment(preprocess(images[idx], cfg.res), rng)
        t = torch.from_numpy(text[idx, which].astype(np.float32))
        z = model.image(x)
        loss = clip_loss(z, model.text(t), model.logit_scale)
        single = torch.from_numpy(pool["n_objects"][idx] == 1) if "n_objects" in pool else None
        if args.aux > 0 and single is not None and single.any():
            zs = z[single]
            for k, head in aux.items():
                loss = loss + args.aux / len(aux) * F.cross_entropy(head(zs), torch.from_numpy(pool[k][idx][single.numpy()].astype(np.int64)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            k = min(500, args.eval_n)
            m = eval_encoder(ImageEncoder(cfg, model.eval()), n_gallery=k, n_single=k, seed=val_seed, split="val")
            run.log(done, loss=round(ema, 4), lr=lr_at(step), temperature=float(1 / model.logit_scale.detach().exp()), **m)
            bar.write(f"{name} step {done}: loss={ema:.3f} " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))
        if done % args.ckpt_every == 0 or done == args.steps:
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"aux.{k}": v for k, v in aux.state_dict().items()})
            ot, ometa = optimizer_tensors(opt)
            tensors.update(ot)
            run.save(done, tensors, {"optimizer": ometa, "seed": args.seed, "steps": args.steps})
    bar.close()
    model.eval()
    m = eval_encoder(ImageEncoder(cfg, model), n_gallery=args.eval_n, n_single=args.eval_n, seed=val_seed, split="val")
    cfg.metrics = {**m, "eval": "val split"}
    cfg.trained_steps = args.steps
    out = weights_path(name, args.out)
    save_encoder(out, cfg, model)
    print(f"{name}: wrote {out} ({out.stat().st_size / 1e6:.2f} MB) after {run.elapsed():.0f} s; " + ", ".join(f"{k}={v:.3f}" for k, v in m.items()))
    return m


def main(argv: list[str] | None = None) -> int:
    p = common_parser("python -m backends.shapes.train encoders", steps=0, batch=128)
    p.set_defaults(steps=None)
    for action in p._actions:
        if action.dest == "steps":
            action.help = "optimiser steps per encoder (default: 1500 for the CNN, 3000 for the ViT)"
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3 for the CNN, 1.5e-3 for the ViT)")
    p.add_argument("--eval-n", type=int, default=1000, help="held-out images for the final evaluation (periodic ones use fewer)")
    p.add_argument("--aux", type=float, default=1.0, help="weight of the auxiliary factor loss on the image tower (0 = pure CLIP)")
    p.add_argument("--only", choices=tuple(CONFIGS), default=None, help="train one encoder only")
    p.add_argument("--pool", type=int, default=24000, help="number of training scenes (embedded once, cached)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    import torch

    torch.set_num_threads(args.threads)
    pool_dir = run_dir_for(args, "encoders").path
    print(f"building the training pool ({args.pool} scenes; cached in {pool_dir})", flush=True)
    pool = build_pool(args.pool, seed=args.seed, split="train", cache_dir=pool_dir)
    for name in ([args.only] if args.only else CONFIGS):
        train_one(name, args, pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
