"""Image/text encoders behind one interface, chosen by a spec string (the `--encoder` flag).

Specs:
    shapes | shapes-cnn | shapes-vit       the bundled Shapes contrastive encoders (assets/shapes)
    openclip:<arch>/<pretrained tag>       an OpenCLIP model, weights from the local Hugging Face cache,
                                           e.g. openclip:ViT-B-32/laion2b_s34b_b79k
    openclip:<arch>/<file.safetensors>     that architecture with weights from a local checkpoint file
    openclip:<arch>/none                   random weights (seeded; for tests)
    openclip:hf-hub:<org>/<repo>           an open_clip repository on the Hub (from the local cache)
    <directory> | local-dir:<directory>    open_clip_config.json + open_clip_model.safetensors

    enc = get_image_encoder("openclip:ViT-B-32/laion2b_s34b_b79k")   # cached per (spec, device)
    v = enc.encode_images(images)        # uint8 (N, H, W, 3) -> float32 (N, D), unit length
    q = enc.encode_texts(["a red circle"])   # float32 (1, D), unit length
    scores = v @ q.T

Weights are read from safetensors only (no pickle: a .pt/.bin/.pth checkpoint is refused). Loading
never waits on a download when HF_HUB_OFFLINE is set (launch.py sets it): a model that is not in
the local cache is an `EncoderUnavailable` error naming the spec, what is missing and how to get it.
torch and open_clip are imported inside functions, so importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from backends.errors import InputError
from backends.hub import hub_offline, hub_offline_now

SHAPES_SPECS = ("shapes-cnn", "shapes-vit")
SHAPES_ALIASES = {"shapes": "shapes-cnn"}
RANDOM_WEIGHTS = ("", "none", "random")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".npz", ".npy", ".tar")
RANDOM_SEED = 0
SPEC_HELP = ("shapes | shapes-cnn | shapes-vit | openclip:<arch>/<pretrained tag, .safetensors file or none> "
             "| openclip:hf-hub:<org>/<repo> | <directory with open_clip_config.json + open_clip_model.safetensors>")


class EncoderUnavailable(InputError):
    """An encoder spec that is well formed but cannot be loaded here (missing weights, offline, ...)."""


# ---------------------------------------------------------------------------------------
# Specs


def parse_encoder_spec(spec: str) -> tuple[str, str | None, str | None]:
    """Split a spec into (kind, arch, source): syntax only (a bare name is a directory only if one exists).

    kind "shapes":    arch = "shapes-cnn" | "shapes-vit", source = None
    kind "openclip":  arch = the open_clip architecture, source = pretrained tag or checkpoint path,
                      None for random weights
    kind "local-dir": arch = None, source = the directory (user-expanded, not resolved)
    kind "hf-hub":    arch = None, source = "<org>/<repo>"
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"encoder spec must be a non-empty string, but is {spec!r}; use one of: {SPEC_HELP}")
    s = spec.strip()
    if s in SHAPES_ALIASES or s in SHAPES_SPECS:
        return "shapes", SHAPES_ALIASES.get(s, s), None
    if s.startswith("openclip:"):
        return _parse_openclip(spec, s[len("openclip:"):].strip())
    if s.startswith("hf-hub:"):
        return _parse_hf_hub(spec, s[len("hf-hub:"):].strip())
    if s.startswith("local-dir:"):
        path = s[len("local-dir:"):].strip()
        if not path:
            raise InputError(f"encoder spec {spec!r}: 'local-dir:' needs a directory after it")
        return "local-dir", None, os.path.expanduser(path)
    if _looks_like_path(s):
        return "local-dir", None, os.path.expanduser(s)
    close = difflib.get_close_matches(s, [*SHAPES_ALIASES, *SHAPES_SPECS], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"Unknown encoder spec {spec!r}: not a Shapes encoder, not 'openclip:...' and not a path to a "
                     f"directory.{hint} Use one of: {SPEC_HELP}")


def _parse_openclip(spec: str, rest: str) -> tuple[str, str | None, str | None]:
    if rest.startswith("hf-hub:"):
        return _parse_hf_hub(spec, rest[len("hf-hub:"):].strip())
    if rest.startswith("local-dir:"):
        return parse_encoder_spec(rest)
    arch, slash, pretrained = rest.partition("/")
    arch, pretrained = arch.strip(), pretrained.strip()
    if not arch:
        raise InputError(f"encoder spec {spec!r} names no OpenCLIP architecture; write openclip:<arch>/<pretrained>, "
                         "e.g. openclip:ViT-B-32/laion2b_s34b_b79k")
    if not slash:
        raise InputError(f"encoder spec {spec!r} names no pretrained weights; write openclip:{arch}/<pretrained tag "
                         f"or .safetensors file>, e.g. openclip:ViT-B-32/laion2b_s34b_b79k, or openclip:{arch}/none "
                         "for random weights")
    return "openclip", arch, None if pretrained.lower() in RANDOM_WEIGHTS else pretrained


def _parse_hf_hub(spec: str, repo: str) -> tuple[str, None, str]:
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise InputError(f"encoder spec {spec!r}: 'hf-hub:' needs a repository id <org>/<repo>, "
                         "e.g. hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    return "hf-hub", None, repo


def _looks_like_path(s: str) -> bool:
    return "/" in s or os.sep in s or s.startswith(("~", ".")) or os.path.isdir(s)


def _is_path(pretrained: str) -> bool:
    """Is an OpenCLIP `pretrained` value a file path rather than a tag (tags have no '/' and no suffix)?"""
    return _looks_like_path(pretrained) or Path(pretrained).suffix.lower() in (".safetensors", *PICKLE_SUFFIXES) \
        or os.path.isfile(pretrained)


def canonical_spec(spec: str) -> str:
    """One name per encoder: "shapes" -> "shapes-cnn", random OpenCLIP -> ".../none", directories resolved."""
    kind, arch, source = parse_encoder_spec(spec)
    if kind == "shapes":
        return arch
    if kind == "openclip":
        if source and _is_path(source):
            source = str(Path(source).expanduser().resolve())
        return f"openclip:{arch}/{source or 'none'}"
    if kind == "hf-hub":
        return f"openclip:hf-hub:{source}"
    return f"local-dir:{Path(source).resolve()}"


def available_encoder_specs() -> list[str]:
    """The Shapes encoders by name, then hints (in <angle brackets>) for the OpenCLIP forms."""
    return [*SHAPES_SPECS,
            ("openclip:<arch>/<pretrained tag> (e.g. openclip:ViT-B-32/laion2b_s34b_b79k, from the local Hugging "
             "Face cache)"),
            "openclip:<arch>/<path to a .safetensors checkpoint>",
            "<directory with open_clip_config.json + open_clip_model.safetensors>"]


# ---------------------------------------------------------------------------------------
# Loading


_CACHE: dict[tuple[str, str], object] = {}
_LOCK = threading.RLock()


def get_image_encoder(spec: str, device: str = "cpu"):
    """The encoder for `spec` on `device` ("cpu", "cuda", "cuda:1"), loaded once and cached.

    Raises InputError for a malformed spec and EncoderUnavailable when it cannot be loaded here.
    The Shapes encoders run on the CPU whatever the device.
    """
    kind, arch, source = parse_encoder_spec(spec)
    name = canonical_spec(spec)
    key = (name, str(device))
    with _LOCK:
        if key not in _CACHE:
            if kind == "shapes":
                _CACHE[key] = _load_shapes(spec, arch)
            else:
                with hub_offline_now():
                    _CACHE[key] = _load_openclip(spec, name, kind, arch, source, str(device))
        return _CACHE[key]


def clear_encoder_cache() -> None:
    """Forget loaded encoders (the next get_image_encoder loads again, e.g. after new weights were saved)."""
    with _LOCK:
        _CACHE.clear()


def encoder_unavailable(spec: str) -> str | None:
    """Why `spec` cannot be loaded here (cheap checks, no model built), or None when it looks loadable."""
    try:
        kind, arch, source = parse_encoder_spec(spec)
        if kind == "shapes":
            from backends.plugins import get_encoder_family

            return get_encoder_family("shapes").unavailable(arch)
        if not _open_clip_installed():
            return "open_clip is not installed (pip install open_clip_torch)"
        if kind == "local-dir":
            _local_dir_files(spec, Path(source))
        elif kind == "openclip" and source:
            if _is_path(source):
                _checkpoint_file(spec, source)
            else:
                _tag_weights(spec, arch, source, check_only=True)
        elif kind == "hf-hub":
            _hf_hub_dir(spec, source, check_only=True)
        elif kind == "openclip":
            _check_arch(spec, arch)
    except InputError as exc:
        return str(exc)
    return None


def _open_clip_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("open_clip") is not None


def _load_shapes(spec: str, name: str):
    from backends.plugins import get_encoder_family

    try:
        return get_encoder_family("shapes").load(name)
    except FileNotFoundError as exc:
        raise EncoderUnavailable(f"encoder {spec!r}: {exc}") from None


def _fix_hint(spec: str) -> str:
    return (f"download it once with `HF_HUB_OFFLINE=0 python -m backends.representations.encoders download {spec}` on a "
            "machine with network, or pass a local directory (open_clip_config.json + open_clip_model.safetensors; "
            "`python -m backends.representations.encoders save <spec> <directory>` writes one)")


def _check_arch(spec: str, arch: str) -> None:
    import open_clip

    models = open_clip.list_models()
    if arch.replace("/", "-") not in models:
        close = difflib.get_close_matches(arch, models, n=3)
        raise EncoderUnavailable(f"encoder {spec!r}: unknown OpenCLIP architecture {arch!r}"
                                 + (f"; close matches: {', '.join(close)}" if close else "")
                                 + f" ({len(models)} known: open_clip.list_models())")


def _checkpoint_file(spec: str, path: str) -> Path:
    """A local checkpoint that may be loaded: an existing .safetensors file (pickles are refused)."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".safetensors":
        raise EncoderUnavailable(
            f"encoder {spec!r}: refusing to load {str(p)!r}: a {p.suffix or 'suffix-less'} checkpoint is read with "
            "pickle (torch.load), and this app loads weights from safetensors only. Convert it once on a machine you "
            "trust (safetensors.torch.save_file(state_dict, 'model.safetensors')) and pass the .safetensors file, or a "
            "directory with open_clip_config.json + open_clip_model.safetensors")
    if not p.is_file():
        raise EncoderUnavailable(f"encoder {spec!r}: checkpoint file {str(p)!r} not found")
    return p


def _local_dir_files(spec: str, directory: Path) -> tuple[dict, Path]:
    """(config dict, safetensors path) of an open_clip model directory, or a clear error."""
    d = directory.expanduser()
    if not d.is_dir():
        raise EncoderUnavailable(f"encoder {spec!r}: {str(d)!r} is not a directory; a local encoder is a directory "
                                 f"with {CONFIG_NAME} + open_clip_model.safetensors")
    cfg_path = d / CONFIG_NAME
    if not cfg_path.is_file():
        raise EncoderUnavailable(f"encoder {spec!r}: {str(d)!r} has no {CONFIG_NAME} (an OpenCLIP model directory "
                                 "holds open_clip_config.json + open_clip_model.safetensors)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EncoderUnavailable(f"encoder {spec!r}: {str(cfg_path)!r} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_cfg"), dict) \
            or "embed_dim" not in cfg["model_cfg"]:
        raise EncoderUnavailable(f"encoder {spec!r}: {str(cfg_path)!r} has no 'model_cfg' with an 'embed_dim' "
                                 "(not an open_clip config)")
    return cfg, _weights_in_dir(spec, d)


def _weights_in_dir(spec: str, d: Path) -> Path:
    for name in WEIGHTS_NAMES:
        if (d / name).is_file():
            return d / name
    found = sorted(d.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise EncoderUnavailable(f"encoder {spec!r}: {str(d)!r} holds several .safetensors files "
                                 f"({', '.join(p.name for p in found)}); name one open_clip_model.safetensors")
    pickles = sorted(p.name for p in d.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise EncoderUnavailable(
            f"encoder {spec!r}: {str(d)!r} has only pickled weights ({', '.join(pickles)}), which this app does not "
            "load (no pickle: safetensors only). Convert them once on a machine you trust to "
            "open_clip_model.safetensors (safetensors.torch.save_file(state_dict, ...))")
    raise EncoderUnavailable(f"encoder {spec!r}: {str(d)!r} has {CONFIG_NAME} but no open_clip_model.safetensors")


def _safe_filename(filename: str) -> str:
    """open_clip's safetensors name for a Hub weights file ('' = the default open_clip_pytorch_model.bin)."""
    if not filename or filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors"
    if filename.endswith((".bin", ".pth")):
        return filename[:-4] + ".safetensors"
    return filename


def _tag_weights(spec: str, arch: str, tag: str, *, check_only: bool = False) -> tuple[Path | None, dict]:
    """(local safetensors file, the tag's config) for an open_clip pretrained tag; never waits on a download
    when offline. With check_only, only looks in the cache (returns (None, cfg) when cached)."""
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    _check_arch(spec, arch)
    arch = arch.replace("/", "-")
    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = list_pretrained_tags_by_model(arch)
        raise EncoderUnavailable(f"encoder {spec!r}: unknown pretrained tag {tag!r} for {arch}; "
                                 + (f"known tags: {', '.join(tags[:12])}{', …' if len(tags) > 12 else ''}" if tags else "open_clip publishes no weights for it")
                                 + f"; or pass a .safetensors file, or openclip:{arch}/none for random weights")
    hub = cfg.get("hf_hub", "")
    if not hub:
        raise EncoderUnavailable(f"encoder {spec!r}: the weights of {arch}/{tag} are published only as a pickled "
                                 f"checkpoint ({cfg.get('url', '?')}), which this app does not load (safetensors only)")
    repo, filename = os.path.split(hub.strip())
    filename = _safe_filename(filename)
    if check_only:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(repo, filename), str):
            raise EncoderUnavailable(f"encoder {spec!r}: {repo}/{filename} is not in the local Hugging Face cache; "
                                     + _fix_hint(spec))
        return None, cfg
    return _hub_file(spec, repo, filename), cfg


def _hub_file(spec: str, repo: str, filename: str) -> Path:
    """hf_hub_download, local cache only when offline; every failure is an EncoderUnavailable."""
    from huggingface_hub import hf_hub_download

    offline = hub_offline()
    try:
        return Path(hf_hub_download(repo, filename, local_files_only=offline))
    except Exception as exc:  # noqa: BLE001 - LocalEntryNotFoundError, EntryNotFoundError, network errors
        if offline:
            raise EncoderUnavailable(f"encoder {spec!r}: {repo}/{filename} is not in the local Hugging Face cache "
                                     f"and HF_HUB_OFFLINE=1 forbids downloading; {_fix_hint(spec)}") from None
        raise EncoderUnavailable(f"encoder {spec!r}: could not download {repo}/{filename} "
                                 f"({type(exc).__name__}: {_short(exc)}); {_fix_hint(spec)}") from None


def _hf_hub_dir(spec: str, repo: str, *, check_only: bool = False) -> Path | None:
    """The local snapshot of an open_clip Hub repository (config, safetensors weights, tokenizer files)."""
    if check_only:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(repo, CONFIG_NAME), str):
            raise EncoderUnavailable(f"encoder {spec!r}: {repo}/{CONFIG_NAME} is not in the local Hugging Face cache; "
                                     + _fix_hint(spec))
        return None
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        return Path(snapshot_download(repo, local_files_only=offline,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # noqa: BLE001 - any failure becomes a message naming the spec
        why = "is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading" if offline else \
            f"could not be downloaded ({type(exc).__name__}: {_short(exc)})"
        raise EncoderUnavailable(f"encoder {spec!r}: the repository {repo} {why}; {_fix_hint(spec)}") from None


def _short(exc: Exception, n: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= n else text[:n] + "…"


def _load_openclip(spec: str, name: str, kind: str, arch: str | None, source: str | None, device: str):
    """Build the model, load safetensors weights, and wrap model + transform + tokenizer."""
    if not _open_clip_installed():
        raise EncoderUnavailable(f"encoder {spec!r}: open_clip is not installed (pip install open_clip_torch)")
    import open_clip

    force_pp, quick_gelu, weights = None, False, None
    if kind in ("local-dir", "hf-hub"):
        directory = Path(source) if kind == "local-dir" else _hf_hub_dir(spec, source)
        cfg, weights = _local_dir_files(spec, directory)
        model_name, model_cfg = f"local-dir:{directory.expanduser()}", cfg["model_cfg"]
    else:
        _check_arch(spec, arch)
        model_name = arch.replace("/", "-")
        model_cfg = open_clip.get_model_config(model_name)
        if source and _is_path(source):
            weights = _checkpoint_file(spec, source)
        elif source:
            weights, tag_cfg = _tag_weights(spec, arch, source)
            force_pp = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
            quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    try:
        model = _build(model_name, device, weights, quick_gelu=quick_gelu, force_preprocess_cfg=force_pp)
        tokenizer = open_clip.get_tokenizer(model_name)
    except EncoderUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a mismatched checkpoint, an uncached HF text tower, a bad device
        raise EncoderUnavailable(f"encoder {spec!r}: could not build the OpenCLIP model "
                                 f"({type(exc).__name__}: {_short(exc)})") from None
    if quick_gelu:
        model_cfg = dict(model_cfg, quick_gelu=True)
    return OpenCLIPEncoder(name, model, tokenizer, model_cfg, device)


def _build(model_name: str, device: str, weights: Path | None, *, quick_gelu: bool, force_preprocess_cfg):
    """open_clip.create_model without any download or pickle, then the safetensors weights (strict)."""
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]), _quiet_random_init_warning():
        torch.manual_seed(RANDOM_SEED)  # random-weight specs give the same model in every process
        model = open_clip.create_model(model_name, pretrained=None, load_weights=False, device=device,
                                       force_quick_gelu=quick_gelu, force_preprocess_cfg=force_preprocess_cfg,
                                       pretrained_image=False, pretrained_text=False)
    if weights is not None:
        if Path(weights).suffix.lower() != ".safetensors":  # defence in depth: open_clip would torch.load it
            raise EncoderUnavailable(f"refusing to load non-safetensors weights {str(weights)!r}")
        open_clip.load_checkpoint(model, str(weights), strict=True)
    return model.eval()


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init_warning():
    """open_clip logs "initialized randomly" for every model built without weights; ours load them next."""
    root, f = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


# ---------------------------------------------------------------------------------------
# The encoder


class OpenCLIPEncoder:
    """An OpenCLIP model: image and text towers in one space, with the model's own preprocessing."""

    def __init__(self, name: str, model, tokenizer, model_cfg: dict, device: str = "cpu"):
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = dict(model_cfg)
        self.device = device
        self.dim = int(model_cfg["embed_dim"])
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.transform = image_transform_v2(PreprocessCfg(**self.preprocess_cfg), is_train=False)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenCLIPEncoder({self.name!r}, dim={self.dim}, device={self.device!r})"

    def encode_images(self, images, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, H, W, 3) (or one (H, W, 3)) -> float32 (N, D), unit length."""
        import torch
        from PIL import Image

        arr = _image_batch(images, self.name)
        out = np.zeros((len(arr), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for s in range(0, len(arr), batch_size):
                x = torch.stack([self.transform(Image.fromarray(im)) for im in arr[s:s + batch_size]])
                z = self.model.encode_image(x.to(self.device))
                out[s:s + len(z)] = torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()
        return out

    def encode_images_tensor(self, images):
        """Differentiable image tower (the gradient failure search's surrogate): a float tensor
        (N, 3, H, W) in [0, 1] -> (N, D) tensor, not normalised, with the autograd graph kept. Resized
        to the model's input side (bilinear, antialiased; for square images what its transform's resize
        and centre crop do, up to the interpolation) and normalised by its mean and std."""
        import torch

        size = self.preprocess_cfg.get("size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        side = min(images.shape[-2:])
        top, left = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
        x = images[..., top:top + side, left:left + side].float()
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), dtype=x.dtype)
        std = torch.tensor(self.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), dtype=x.dtype)
        x = (x - mean.view(1, 3, 1, 1).to(x.device)) / std.view(1, 3, 1, 1).to(x.device)
        return self.model.encode_image(x.to(self.device))

    def encode_texts(self, texts, batch_size: int = 256) -> np.ndarray:
        """Free text (a string or a list of N strings) -> float32 (N, D), unit length."""
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise InputError(f"texts must be strings, but include {bad[0]!r}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[s:s + batch_size])
                z = self.model.encode_text(tokens.to(self.device))
                out[s:s + len(z)] = torch.nn.functional.normalize(z.float(), dim=-1).cpu().numpy()
        return out


def _image_batch(images, name: str) -> np.ndarray:
    arr = np.asarray(images)
    shape = arr.shape
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"images for encoder {name!r} must be (N, H, W, 3) or (H, W, 3), but have shape {shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"images for encoder {name!r} must be uint8, but are {arr.dtype}")
    return np.ascontiguousarray(arr)


def save_encoder_dir(encoder: OpenCLIPEncoder, directory: str | Path) -> Path:
    """Write an OpenCLIP encoder as a local directory (open_clip_config.json + open_clip_model.safetensors,
    plus tokenizer files for Hugging Face tokenizers) that the spec "<directory>" loads back offline."""
    from safetensors.torch import save_file

    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.model.state_dict().items()}
    save_file(state, str(d / WEIGHTS_NAMES[0]))
    pp = {k: encoder.preprocess_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
          if k in encoder.preprocess_cfg}
    (d / CONFIG_NAME).write_text(json.dumps({"model_cfg": encoder.model_cfg, "preprocess_cfg": pp}, indent=2))
    if type(encoder.tokenizer).__name__ != "SimpleTokenizer" and hasattr(encoder.tokenizer, "save_pretrained"):
        encoder.tokenizer.save_pretrained(str(d))
    return d


def main(argv: list[str] | None = None) -> int:
    """python -m backends.representations.encoders download <spec> | save <spec> <directory> | list"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m backends.representations.encoders", description=main.__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the encoder specs")
    dl = sub.add_parser("download", help="load a spec once (fills the Hugging Face cache; run with HF_HUB_OFFLINE=0)")
    dl.add_argument("spec")
    sv = sub.add_parser("save", help="write an OpenCLIP spec as a local directory usable offline")
    sv.add_argument("spec")
    sv.add_argument("directory")
    args = p.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(available_encoder_specs()))
        return 0
    try:
        enc = get_image_encoder(args.spec)
    except InputError as exc:
        print(f"error: {exc}")
        return 1
    if args.cmd == "save":
        if not isinstance(enc, OpenCLIPEncoder):
            print(f"error: {args.spec!r} is not an OpenCLIP encoder; only those are saved as directories")
            return 1
        print(f"saved {enc.name} to {save_encoder_dir(enc, args.directory)}")
    else:
        print(f"{enc.name}: {enc.dim}-d, ready")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
