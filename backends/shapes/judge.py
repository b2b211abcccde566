"""The judge: a small CNN that reads the factors (shape, colour, size, 3x3 position) of Shapes images.

Used only for evaluation (does the generator draw what the prompt asked for, does a direction
change one factor only). Two tiny networks share one weights file:

- the *scene* net reads a whole single-object image (any size; resized to 64x64 inside) and
  predicts shape, colour, size and position;
- the *object* net reads a window centred on one object (a crop of fixed relative size, so the
  object's scale is preserved) and predicts shape, colour and size; position comes from where the
  object is. ``predict_objects(image, masks)`` uses it for multi-object scenes and regions.

    judge = load_judge()
    judge.predict(images)                 # DataFrame: shape, colour, size, position (+ *_conf)
    judge.predict_objects(image, masks)   # one row per mask
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.paths import assets_dir
from backends.shapes import scenes

ASSETS = assets_dir() / "shapes"
WEIGHTS = ASSETS / "judge.safetensors"
CONFIG = ASSETS / "judge.json"

FACTORS: dict[str, tuple[str, ...]] = {
    "shape": scenes.SHAPES,
    "colour": tuple(scenes.COLOURS),
    "size": scenes.SIZES,
    "position": scenes.POSITIONS,
}
OBJECT_FACTORS = ("shape", "colour", "size")


@dataclass
class JudgeConfig:
    scene_res: int = 64
    crop_res: int = 32
    crop_window: float = 0.7  # side of the object window, as a fraction of the image side
    scene_channels: tuple[int, ...] = (16, 32, 64, 96)
    crop_channels: tuple[int, ...] = (24, 48, 96)
    factors: dict = field(default_factory=lambda: {k: list(v) for k, v in FACTORS.items()})
    metrics: dict = field(default_factory=dict)
    trained_steps: int = 0

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["scene_channels"] = list(self.scene_channels)
        d["crop_channels"] = list(self.crop_channels)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> JudgeConfig:
        d = json.loads(text)
        d["scene_channels"] = tuple(d["scene_channels"])
        d["crop_channels"] = tuple(d["crop_channels"])
        return cls(**d)


def _nn():
    import torch
    from torch import nn

    class ConvNet(nn.Module):
        """conv-BN-ReLU blocks, each followed by 2x2 max pooling, then linear heads on the flat map."""

        def __init__(self, res: int, channels: tuple[int, ...], heads: dict[str, int]):
            super().__init__()
            layers, c_in = [], 3
            for c in channels:
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                c_in = c
            self.features = nn.Sequential(*layers)
            side = res // 2 ** len(channels)
            self.neck = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(c_in * side * side, 64), nn.ReLU(inplace=True))
            self.heads = nn.ModuleDict({k: nn.Linear(64, n) for k, n in heads.items()})

        def forward(self, x):
            h = self.neck(self.features(x))
            return {k: head(h) for k, head in self.heads.items()}

    return torch, nn, ConvNet


def build_nets(cfg: JudgeConfig):
    """(scene_net, object_net) with random weights."""
    torch, nn, ConvNet = _nn()
    scene = ConvNet(cfg.scene_res, cfg.scene_channels, {k: len(v) for k, v in cfg.factors.items()})
    obj = ConvNet(cfg.crop_res, cfg.crop_channels, {k: len(cfg.factors[k]) for k in OBJECT_FACTORS})
    return scene, obj


# ---------------------------------------------------------------------------------------
# Pre-processing shared by training and inference (torch)

def to_tensor(images):
    """uint8 (N, H, W, 3) or (H, W, 3) numpy / float tensor in [0,1] (N,3,H,W) -> float (N,3,H,W) in [-1, 1]."""
    import torch

    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point and images.ndim == 4 and images.shape[1] == 3:
        return images * 2 - 1
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) or (H, W, 3), but have shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0 + 1e-6:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def resize(x, res: int):
    import torch.nn.functional as F

    if x.shape[-1] == res and x.shape[-2] == res:
        return x
    return F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)


def crop_windows(x, centres, window: float, res: int):
    """Windows of side `window` (fraction of the image) centred at `centres` (N, 2) x,y in [0,1].

    x: float (N, 3, H, W). Outside the image the border pixels are repeated. Returns (N, 3, res, res).
    """
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    centres = torch.as_tensor(centres, dtype=x.dtype).reshape(n, 2)
    # Anti-alias first when the window would be sampled sparsely.
    src = x.shape[-1] * window
    if src > 1.5 * res:
        x = resize(x, int(round(res / window)))
    lin = (torch.arange(res, dtype=x.dtype) + 0.5) / res - 0.5  # in [-0.5, 0.5)
    gx = (centres[:, 0, None] + window * lin[None]) * 2 - 1  # (N, res) normalised coords
    gy = (centres[:, 1, None] + window * lin[None]) * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(n, res, res), gy[:, :, None].expand(n, res, res)], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mask_centres(masks) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (K, 2) x,y in [0,1] and areas (K,) (fraction of the image) of bool masks (K, H, W)."""
    m = np.asarray(masks, dtype=bool)
    if m.ndim == 2:
        m = m[None]
    k, h, w = m.shape
    area = m.reshape(k, -1).sum(1)
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (m.sum(1) * xs).sum(1) / area
        cy = (m.sum(2) * ys).sum(1) / area
    cen = np.stack([cx, cy], 1)
    cen[area == 0] = 0.5
    return cen.astype(np.float32), area / (h * w)


# ---------------------------------------------------------------------------------------
# Inference

class Judge:
    def __init__(self, cfg: JudgeConfig, scene_net, object_net):
        self.cfg = cfg
        self.scene_net = scene_net.eval()
        self.object_net = object_net.eval()
        self.labels = {k: tuple(v) for k, v in cfg.factors.items()}

    def _decode(self, logits: dict, factors) -> pandas.DataFrame:  # noqa: F821
        import pandas as pd

        out = {}
        for k in factors:
            p = logits[k].softmax(-1).numpy()
            idx = p.argmax(1)
            out[k] = [self.labels[k][i] for i in idx]
            out[f"{k}_conf"] = p[np.arange(len(idx)), idx].astype(np.float32)
        return pd.DataFrame(out)

    def predict_proba(self, images, batch_size: int = 256) -> dict[str, np.ndarray]:
        """Softmax probabilities per factor, {factor: (N, n_classes)} (scene net)."""
        import torch

        x = to_tensor(images)
        outs: dict[str, list] = {k: [] for k in self.labels}
        with torch.inference_mode():
            for s in range(0, len(x), batch_size):
                lg = self.scene_net(resize(x[s: s + batch_size], self.cfg.scene_res))
                for k in outs:
                    outs[k].append(lg[k].softmax(-1))
        return {k: torch.cat(v).numpy() if v else np.zeros((0, len(self.labels[k])), np.float32) for k, v in outs.items()}

    def predict(self, images, batch_size: int = 256) -> pandas.DataFrame:  # noqa: F821
        """Factors of single-object images (uint8 (N, H, W, 3), any H=W): shape, colour, size,
        position and their confidences."""
        import pandas as pd

        proba = self.predict_proba(images, batch_size)
        out = {}
        for k, p in proba.items():
            idx = p.argmax(1) if len(p) else np.zeros(0, int)
            out[k] = [self.labels[k][i] for i in idx]
            out[f"{k}_conf"] = p[np.arange(len(idx)), idx].astype(np.float32)
        return pd.DataFrame(out)

    def scene_logits(self, images) -> dict:
        """Scene-net logits {factor: (N, n_classes)} with the autograd graph kept: images a float tensor
        (N, 3, H, W) in [0, 1] (the failure search's differentiable score backpropagates through it)."""
        return self.scene_net(resize(to_tensor(images), self.cfg.scene_res))

    def object_logits(self, images, centres, *, grad: bool = False):
        """Object-net logits for windows centred at `centres` (N, 2) in images (N, H, W, 3), or in a
        float tensor (N, 3, H, W) in [0, 1]; grad: keep the autograd graph (else inference mode)."""
        import contextlib

        import torch

        x = to_tensor(images)
        with contextlib.nullcontext() if grad else torch.inference_mode():
            crops = crop_windows(x, centres, self.cfg.crop_window, self.cfg.crop_res)
            return self.object_net(crops)

    def predict_objects(self, image, masks) -> pandas.DataFrame:  # noqa: F821
        """One row per mask: shape, colour, size (object net on a window centred on the mask's
        centroid), position and x, y (from the centroid), area (fraction of the image), confidences.

        image: uint8 (H, W, 3); masks: bool (K, H, W) or (H, W) at the image's size (or a list of them).
        """
        img = np.asarray(image)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"image must be (H, W, 3), but has shape {img.shape}")
        m = np.asarray(masks, dtype=bool)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[1:] != img.shape[:2]:
            raise ValueError(f"masks must be (K, H, W) with H, W = {img.shape[:2]}, but have shape {m.shape}")
        cen, area = mask_centres(m)
        if len(m) == 0:
            import pandas as pd

            return pd.DataFrame(columns=["shape", "colour", "size", "position", "x", "y", "area"])
        logits = self.object_logits(np.repeat(img[None], len(m), 0), cen)
        df = self._decode(logits, OBJECT_FACTORS)
        df["position"] = [scenes.POSITIONS[3 * scenes._cell(y) + scenes._cell(x)] for x, y in cen]
        df["x"], df["y"], df["area"] = cen[:, 0], cen[:, 1], area.astype(np.float32)
        return df


_CACHE: dict[str, Judge] = {}
_LOCK = threading.Lock()


def load_judge(path: str | Path | None = None) -> Judge:
    """Load the judge from assets/shapes/judge.safetensors (+ judge.json); cached."""
    weights = Path(path) if path else WEIGHTS
    config = weights.with_suffix(".json")
    key = str(weights.resolve())
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if not weights.exists() or not config.exists():
            raise FileNotFoundError(
                f"Judge weights not found at {weights} (and {config.name}); "
                "train them with: python -m backends.shapes.train judge")
        from safetensors.torch import load_file

        cfg = JudgeConfig.from_json(config.read_text())
        scene, obj = build_nets(cfg)
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        scene.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("scene.")})
        obj.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("object.")})
        judge = Judge(cfg, scene, obj)
        _CACHE[key] = judge
        return judge


def save_judge(path: str | Path, cfg: JudgeConfig, scene_net, object_net, *, half: bool = True) -> None:
    """Write weights (float16 by default: the file stays well under 1 MB) and the JSON config."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"scene.{k}": v for k, v in scene_net.state_dict().items()}
    state.update({f"object.{k}": v for k, v in object_net.state_dict().items()})
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(cfg.to_json())
