"""Train the judge (factor classifier): python -m backends.shapes.train judge [--steps N] ...

Data is generated on the fly from the "train" split (a fresh seed per step), half rendered at
32x32 and half at 64x64, with mild colour jitter, noise and blur so the judge also reads imperfect
generator output. The scene net learns single-object images; the object net learns windows
centred on the objects of 1-3 object scenes (centres jittered, as painted regions are not exact).
"""
from __future__ import annotations

import math
import sys

import numpy as np

from backends.shapes import scenes
from backends.shapes.judge import (
    FACTORS,
    OBJECT_FACTORS,
    JudgeConfig,
    build_nets,
    crop_windows,
    mask_centres,
    resize,
    save_judge,
    to_tensor,
)
from backends.shapes.train import common_parser, load_optimizer, optimizer_tensors, progress, run_dir_for

LABEL_INDEX = {k: {name: i for i, name in enumerate(v)} for k, v in FACTORS.items()}


def augment(x, rng: np.random.Generator):
    """Mild photometric noise on (N, 3, H, W) in [-1, 1]."""
    import torch

    n = x.shape[0]
    g = torch.from_numpy(rng.standard_normal((n, 4)).astype(np.float32))
    gain = 1 + 0.08 * g[:, :1, None, None]
    offset = 0.06 * torch.from_numpy(rng.standard_normal((n, 3, 1, 1)).astype(np.float32))
    x = x * gain + offset
    sigma = torch.from_numpy(rng.uniform(0, 0.08, (n, 1, 1, 1)).astype(np.float32))
    x = x + sigma * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32))
    blur = rng.random(n) < 0.25
    if blur.any():
        h = x.shape[-1]
        xb = x[torch.from_numpy(blur)]
        x[torch.from_numpy(blur)] = resize(resize(xb, h // 2), h)
    return x.clamp(-1.2, 1.2)


def scene_batch(n: int, seed: int, cfg: JudgeConfig, rng: np.random.Generator, *, aug: bool = True, split: str = "train"):
    """Single-object images (half 32, half 64), resized to the judge's resolution, and labels."""
    import torch

    xs, labels = [], {k: [] for k in FACTORS}
    for j, size in enumerate((32, 64)):
        b = scenes.make_batch(n // 2 if j == 0 else n - n // 2, seed=seed * 2 + j, split=split, size=size, single=True)
        xs.append(resize(to_tensor(b.images), cfg.scene_res))
        for k in FACTORS:
            labels[k] += [LABEL_INDEX[k][v] for v in b.factors[k]]
    x = torch.cat(xs)
    if aug:
        x = augment(x, rng)
    return x, {k: torch.tensor(v) for k, v in labels.items()}


def object_batch(n: int, seed: int, cfg: JudgeConfig, rng: np.random.Generator, *, aug: bool = True,
                 split: str = "train", jitter: float = 0.025):
    """Windows centred on mostly visible objects of 1-3 object scenes, and labels."""
    import torch

    crops, labels = [], {k: [] for k in OBJECT_FACTORS}
    got, j = 0, 0
    while got < n:
        size = 32 if j % 2 == 0 else 64
        b = scenes.make_batch(max(8, (n - got) // 2), seed=seed * 16 + j, split=split, size=size)
        j += 1
        imgs, cens, labs = [], [], []
        for img, masks, spec in zip(b.images, b.masks, b.specs):
            cen, area = mask_centres(masks)
            for i, o in enumerate(spec.objects):
                if i < len(spec.objects) - 1:  # may be occluded: keep if >= 60% is visible
                    alone = scenes.render(scenes.SceneSpec([o], spec.background), size)[1][0].sum()
                    if masks[i].sum() < 0.6 * max(alone, 1):
                        continue
                imgs.append(img)
                cens.append(cen[i])
                labs.append(o)
        if not imgs:
            continue
        cens = np.asarray(cens) + rng.normal(0, jitter, (len(cens), 2)).astype(np.float32)
        x = to_tensor(np.stack(imgs))
        if aug:
            x = augment(x, rng)
        crops.append(crop_windows(x, cens, cfg.crop_window, cfg.crop_res))
        for o in labs:
            for k in OBJECT_FACTORS:
                labels[k].append(LABEL_INDEX[k][getattr(o, k)])
        got += len(imgs)
    x = torch.cat(crops)[:n]
    return x, {k: torch.tensor(v[:n]) for k, v in labels.items()}


def main(argv: list[str] | None = None) -> int:
    p = common_parser("python -m backends.shapes.train judge", steps=1000, batch=96)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-n", type=int, default=1000, help="held-out images for the final evaluation (periodic ones use fewer)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = run_dir_for(args, "judge")
    cfg = JudgeConfig()
    scene_net, object_net = build_nets(cfg)
    params = list(scene_net.parameters()) + list(object_net.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    warmup = min(100, max(1, args.steps // 10))

    def lr_at(step: int) -> float:  # warm-up, then cosine to 5%
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))

    start = 0
    if args.resume and (ck := run.load()) is not None:
        start, tensors, state = ck
        scene_net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("scene.")})
        object_net.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("object.")})
        load_optimizer(opt, tensors, state["optimizer"])
        print(f"resumed judge at step {start}")

    bar = progress(args.steps, start, "judge", args.no_progress)
    ema = None
    for step in range(start, args.steps):
        scene_net.train()
        object_net.train()
        rng = np.random.default_rng([args.seed, step])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        xs, ys = scene_batch(args.batch, seed=args.seed * 1_000_003 + step, cfg=cfg, rng=rng)
        xo, yo = object_batch(args.batch, seed=args.seed * 1_000_003 + step, cfg=cfg, rng=rng)
        ls, lo = scene_net(xs), object_net(xo)
        loss = sum(F.cross_entropy(ls[k], ys[k]) for k in ys) + sum(F.cross_entropy(lo[k], yo[k]) for k in yo)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            metrics = quick_eval(scene_net, object_net, cfg, n=min(256, args.eval_n))
            run.log(done, loss=round(ema, 4), lr=lr_at(step), **metrics)
            bar.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if done % args.ckpt_every == 0 or done == args.steps:
            tensors = {f"scene.{k}": v for k, v in scene_net.state_dict().items()}
            tensors.update({f"object.{k}": v for k, v in object_net.state_dict().items()})
            ot, ometa = optimizer_tensors(opt)
            tensors.update(ot)
            run.save(done, tensors, {"optimizer": ometa, "seed": args.seed, "steps": args.steps})
    bar.close()
    metrics = quick_eval(scene_net, object_net, cfg, n=args.eval_n)
    cfg.metrics = {**metrics, "eval": f"val split, {args.eval_n} images per resolution"}
    cfg.trained_steps = args.steps
    out = args.out / "judge.safetensors"
    save_judge(out, cfg, scene_net.eval(), object_net.eval())
    print(f"judge: wrote {out} ({out.stat().st_size / 1e3:.0f} kB) after {run.elapsed():.0f} s; " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return 0


def quick_eval(scene_net, object_net, cfg: JudgeConfig, *, n: int = 500, split: str = "val", seed: int = 0) -> dict:
    """Accuracy per factor on clean held-out renders (scene net at 32 and 64; object net)."""
    import torch

    from backends.shapes.judge import Judge

    judge = Judge(cfg, scene_net.eval(), object_net.eval())
    out = {}
    with torch.inference_mode():
        for size in (32, 64):
            b = scenes.make_batch(n, seed=seed + size, split=split, size=size, single=True)
            pred = judge.predict(b.images)
            for k in FACTORS:
                out[f"scene{size}_{k}"] = float((pred[k].values == b.factors[k].values).mean())
        rng = np.random.default_rng(seed)
        xo, yo = object_batch(n, seed=seed, cfg=cfg, rng=rng, aug=False, split=split, jitter=0.0)
        lo = object_net(xo)
        for k in OBJECT_FACTORS:
            out[f"object_{k}"] = float((lo[k].argmax(1) == yo[k]).float().mean())
    return out


if __name__ == "__main__":
    sys.exit(main())
