"""Settings from CLI flags and environment variables, clamped, in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from backends.corpora import limits as _upload


def _env_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, but is {raw!r}") from None
    return max(lo, min(hi, value))


def _env_float(name: str, default: float, lo: float, hi: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, but is {raw!r}") from None
    if value != value:  # NaN
        raise ValueError(f"environment variable {name} must be a number, but is {raw!r}")
    return max(lo, min(hi, value))


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"environment variable {name} must be 1 or 0, but is {raw!r}")


def default_cache_dir() -> Path:
    env = os.environ.get("LATENT_ATLAS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent-atlas"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    data: list[str] = field(default_factory=list)  # user corpora given with --data
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: Path = field(default_factory=default_cache_dir)
    max_upload_mb: int = 200
    # what an upload may hold (backends/corpora/limits.py); checked before parsing, each refusal names the limit
    max_upload_columns: int = _upload.MAX_COLUMNS
    max_upload_cells: int = _upload.MAX_CELLS
    max_image_megapixels: int = _upload.MAX_IMAGE_PIXELS // 1_000_000  # larger images in a zip/folder are skipped
    upload_timeout_s: int = int(_upload.MAX_PARSE_SECONDS)  # reading one upload's tables stops after this long
    upload_memory_mb: int = _upload.MAX_PARSE_MEMORY // 2**20  # estimated memory of a parsed table
    # a corpus is refused when serving it would take more memory than this (backends/corpora/memory.py);
    # 0: 60% of the machine's (or container's) memory
    memory_budget_gb: float = 0.0
    exact_index_below: int = 20_000  # exact FAISS search below this many vectors, HNSW above
    ivf_index_above: int = 1_000_000  # an IVF index (compressed rows, re-ranked) from this many vectors
    annotations_db: str = ""  # SQLite path or SQLAlchemy URL; empty: <cache_dir>/annotations.sqlite
    admin_password: str = ""
    default_corpus: str = "digits"
    # model backends (README "Backends"): names resolved by backends.generative.sd / backends.representations.encoders
    generator: str = "shapes"  # shapes | sd15 | sd21 | sd-turbo | sdxl-turbo | <hub id> | <local dir>
    encoder: str = "shapes"  # shapes | shapes-vit | openclip:<arch>/<pretrained> | <local dir>
    text_encoder: str = "auto"  # auto (the encoder's own text tower) | minilm
    download: bool = False  # let hub models be fetched (default: local cache and folders only)
    attention_slicing: bool = False
    cpu_offload: bool = False  # text encoders and VAE wait on the CPU between calls (GPU memory)

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        s = cls(
            host=os.environ.get("GRADIO_SERVER_NAME", cls.host),
            port=_env_int("PORT", _env_int("GRADIO_SERVER_PORT", cls.port, 1, 65535), 1, 65535),
            device=os.environ.get("LATENT_ATLAS_DEVICE", cls.device),
            max_upload_mb=_env_int("LATENT_ATLAS_MAX_UPLOAD_MB", cls.max_upload_mb, 1, 10_000),
            max_upload_columns=_env_int("LATENT_ATLAS_MAX_UPLOAD_COLUMNS", cls.max_upload_columns, 1, 10_000_000),
            max_upload_cells=_env_int("LATENT_ATLAS_MAX_UPLOAD_CELLS", cls.max_upload_cells, 1, 2_000_000_000),
            max_image_megapixels=_env_int("LATENT_ATLAS_MAX_IMAGE_MEGAPIXELS", cls.max_image_megapixels, 1, 1_000),
            upload_timeout_s=_env_int("LATENT_ATLAS_UPLOAD_TIMEOUT_S", cls.upload_timeout_s, 1, 3_600),
            upload_memory_mb=_env_int("LATENT_ATLAS_UPLOAD_MEMORY_MB", cls.upload_memory_mb, 16, 1_000_000),
            memory_budget_gb=_env_float("LATENT_ATLAS_MEMORY_BUDGET_GB", cls.memory_budget_gb, 0.0, 1e6),
            annotations_db=os.environ.get("LATENT_ATLAS_ANNOTATIONS_DB", ""),
            admin_password=os.environ.get("LATENT_ATLAS_ADMIN_PASSWORD", ""),
            default_corpus=os.environ.get("LATENT_ATLAS_CORPUS", cls.default_corpus),
            generator=os.environ.get("LATENT_ATLAS_GENERATOR", cls.generator),
            encoder=os.environ.get("LATENT_ATLAS_ENCODER", cls.encoder),
            text_encoder=os.environ.get("LATENT_ATLAS_TEXT_ENCODER", cls.text_encoder),
            download=_env_flag("LATENT_ATLAS_DOWNLOAD"),
            attention_slicing=_env_flag("LATENT_ATLAS_ATTENTION_SLICING"),
            cpu_offload=_env_flag("LATENT_ATLAS_CPU_OFFLOAD"),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        for key, lo, hi in (("port", 1, 65535), ("max_upload_mb", 1, 10_000)):  # environment values are clamped
            if overrides.get(key) is not None and not lo <= int(overrides[key]) <= hi:
                raise ValueError(f"{key} must be between {lo} and {hi}, but is {overrides[key]!r}")
        s.cache_dir = Path(s.cache_dir).expanduser().resolve()
        if s.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be one of auto, cpu, cuda, but is {s.device!r}")
        if s.text_encoder not in ("auto", "minilm"):
            raise ValueError(f"text encoder must be auto or minilm, but is {s.text_encoder!r}")
        return s

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def memory_budget_bytes(self) -> int:
        """The memory a served corpus may take: memory_budget_gb, or 60% of the machine's memory."""
        from backends.corpora.memory import budget_bytes

        return budget_bytes(float(self.memory_budget_gb))

    @property
    def upload_limits(self) -> _upload.UploadLimits:
        """The limits the upload loaders check (pass as `limits=` to load_path / load_paths)."""
        return _upload.UploadLimits(
            max_columns=int(self.max_upload_columns), max_cells=int(self.max_upload_cells),
            max_image_pixels=int(self.max_image_megapixels) * 1_000_000,
            max_parse_seconds=float(self.upload_timeout_s), max_parse_memory=int(self.upload_memory_mb) * 2**20,
            memory_budget=self.memory_budget_bytes if self.memory_budget_gb > 0 else None,  # None: 60% of memory
        )

    @property
    def operator_limits(self) -> _upload.UploadLimits:
        """The limits for files the person running the server names (`--data`, FILE arguments): the
        upload limits, except that size (values, parse memory, parse time) is left to the memory
        budget, which add_path checks for every corpus: a million 384-dimensional rows open."""
        import dataclasses

        budget = self.memory_budget_bytes
        return dataclasses.replace(self.upload_limits, max_cells=max(budget // 4, int(self.max_upload_cells)),
                                   max_parse_memory=max(budget, int(self.upload_memory_mb) * 2**20),
                                   max_parse_seconds=max(3600.0, float(self.upload_timeout_s)))

    @property
    def annotations_url(self) -> str:
        if self.annotations_db:
            if "://" in self.annotations_db:
                return self.annotations_db
            return f"sqlite:///{Path(self.annotations_db).expanduser().resolve()}"
        return f"sqlite:///{self.cache_dir / 'annotations.sqlite'}"


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when torch sees a GPU, else 'cpu'. 'cuda' without a GPU raises."""
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise ValueError("device is 'cuda' but no CUDA GPU is visible to torch; use --device cpu or auto")
    return "cuda" if has_cuda else "cpu"
