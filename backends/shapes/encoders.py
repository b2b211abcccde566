"""Small contrastive image encoders aligned to MiniLM caption embeddings (CLIP-style).

Each encoder has an image tower (trained) and a text projection on top of the frozen MiniLM
pooled sentence vector (trained), both ending in L2-normalised D-dim vectors, so that
image·text cosine ranks captions for images and images for free-text queries.

    enc = load_image_encoder("shapes-cnn")      # or "shapes-vit"
    v = enc.encode_images(images)               # uint8 (N, H, W, 3), any H=W -> float32 (N, D)
    q = enc.encode_texts(["a blue star"])       # float32 (1, D)
    scores = v @ q.T

Two architectures with different seeds give the two spaces the stitching tab compares.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backends.paths import assets_dir

ASSETS = assets_dir() / "shapes"
TEXT_DIM = 384


@dataclass
class EncoderConfig:
    name: str
    arch: str  # "cnn" or "vit"
    res: int = 32
    dim: int = 128
    seed: int = 0
    # cnn
    channels: tuple[int, ...] = (24, 48, 96, 96)
    # vit
    patch: int = 4
    width: int = 64
    depth: int = 3
    heads: int = 4
    metrics: dict = field(default_factory=dict)
    trained_steps: int = 0

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["channels"] = list(self.channels)
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> EncoderConfig:
        d = json.loads(text)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


CONFIGS: dict[str, EncoderConfig] = {
    "shapes-cnn": EncoderConfig(name="shapes-cnn", arch="cnn", seed=1),
    "shapes-vit": EncoderConfig(name="shapes-vit", arch="vit", seed=2),
}


def available_encoders() -> tuple[str, ...]:
    return tuple(CONFIGS)


def _modules():
    import torch
    from torch import nn

    class CNNTower(nn.Module):
        def __init__(self, cfg: EncoderConfig):
            super().__init__()
            layers, c_in = [], 3
            for c in cfg.channels:
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
                c_in = c
            self.features = nn.Sequential(*layers)
            side = cfg.res // 2 ** len(cfg.channels)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, cfg.dim))

        def forward(self, x):
            return self.head(self.features(x))

    class Block(nn.Module):
        def __init__(self, width: int, heads: int):
            super().__init__()
            self.n1 = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
            self.n2 = nn.LayerNorm(width)
            self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

        def forward(self, x):
            h = self.n1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.n2(x))

    class ViTTower(nn.Module):
        """A small ViT with a convolutional stem (Xiao et al. 2021, "Early convolutions help
        transformers see better"): without it the ViT did not learn shape within our CPU budget
        (zero-shot shape at chance after 750 steps, while colour was at 100%)."""

        def __init__(self, cfg: EncoderConfig):
            super().__init__()
            n = (cfg.res // cfg.patch) ** 2
            self.embed = nn.Sequential(  # conv stem, overall stride = patch
                nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                nn.Conv2d(64, cfg.width, cfg.patch // 2, stride=cfg.patch // 2),
            )
            self.pos = nn.Parameter(torch.randn(1, n + 1, cfg.width) * 0.02)
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
            self.blocks = nn.Sequential(*[Block(cfg.width, cfg.heads) for _ in range(cfg.depth)])
            self.norm = nn.LayerNorm(cfg.width)
            self.proj = nn.Linear(cfg.width, cfg.dim)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
            t = self.norm(self.blocks(t))
            return self.proj(t[:, 0])

    class TextProjection(nn.Module):
        """MiniLM pooled (384) -> D: a linear map plus a small residual MLP."""

        def __init__(self, dim: int):
            super().__init__()
            self.lin = nn.Linear(TEXT_DIM, dim)
            self.mlp = nn.Sequential(nn.Linear(TEXT_DIM, 512), nn.GELU(), nn.Linear(512, dim))

        def forward(self, t):
            return self.lin(t) + self.mlp(t)

    class ContrastiveModel(nn.Module):
        def __init__(self, cfg: EncoderConfig):
            super().__init__()
            self.image = CNNTower(cfg) if cfg.arch == "cnn" else ViTTower(cfg)
            self.text = TextProjection(cfg.dim)
            self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    return ContrastiveModel


def build_model(cfg: EncoderConfig):
    if cfg.arch not in ("cnn", "vit"):
        raise ValueError(f"Unknown encoder architecture: {cfg.arch!r}. Must be one of: cnn, vit")
    return _modules()(cfg)


def preprocess(images, res: int):
    """uint8 (N, H, W, 3) -> float (N, 3, res, res) in [-1, 1] (antialiased resize)."""
    from backends.shapes.judge import resize, to_tensor

    return resize(to_tensor(images), res)


class ImageEncoder:
    """A trained contrastive encoder: ``encode_images`` and ``encode_texts`` in one space."""

    def __init__(self, cfg: EncoderConfig, model):
        self.cfg = cfg
        self.name = cfg.name
        self.dim = cfg.dim
        self.model = model.eval()

    def encode_images(self, images, batch_size: int = 512) -> np.ndarray:
        """uint8 (N, H, W, 3) (or one (H, W, 3)) -> float32 (N, D), unit length."""
        import torch

        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), but have shape {arr.shape}")
        out = np.zeros((len(arr), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(arr), batch_size):
                z = self.model.image(preprocess(arr[s: s + batch_size], self.cfg.res))
                out[s: s + len(z)] = torch.nn.functional.normalize(z, dim=-1).numpy()
        return out

    def encode_text_vectors(self, pooled: np.ndarray) -> np.ndarray:
        """MiniLM pooled vectors (N, 384) -> float32 (N, D), unit length."""
        import torch

        with torch.inference_mode():
            z = self.model.text(torch.as_tensor(np.asarray(pooled, dtype=np.float32)))
            return torch.nn.functional.normalize(z, dim=-1).numpy().astype(np.float32)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Free text -> float32 (N, D), unit length (MiniLM pooled -> this encoder's projection)."""
        from backends.shapes.text import get_text_encoder

        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_text_vectors(get_text_encoder().encode_pooled(list(texts)))


_CACHE: dict[str, ImageEncoder] = {}
_LOCK = threading.Lock()


def weights_path(name: str, directory: Path | None = None) -> Path:
    return Path(directory or ASSETS) / f"encoder_{name.replace('shapes-', '')}.safetensors"


def load_image_encoder(name: str, directory: str | Path | None = None) -> ImageEncoder:
    """Load "shapes-cnn" or "shapes-vit" from assets/shapes/encoder_<arch>.safetensors (+ .json); cached."""
    if name not in CONFIGS:
        raise ValueError(f"Unknown image encoder: {name!r}. Must be one of: {', '.join(CONFIGS)}")
    path = weights_path(name, Path(directory) if directory else None)
    key = str(path.resolve())
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        if not path.exists() or not path.with_suffix(".json").exists():
            raise FileNotFoundError(
                f"Encoder weights for {name!r} not found at {path}; train them with: python -m backends.shapes.train encoders")
        from safetensors.torch import load_file

        cfg = EncoderConfig.from_json(path.with_suffix(".json").read_text())
        model = build_model(cfg)
        model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
        enc = ImageEncoder(cfg, model)
        _CACHE[key] = enc
        return enc


def save_encoder(path: str | Path, cfg: EncoderConfig, model, *, half: bool = True) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    path.with_suffix(".json").write_text(cfg.to_json())
