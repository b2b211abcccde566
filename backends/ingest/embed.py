"""The encoder, reached through the project's registries, in a Ray Data actor pool.

    choice = choose_encoder("images", None)      # the app's default image encoder (--encoder / LATENT_ATLAS_ENCODER)
    ds = embed(ds, source, choice, workers=2, cpus_per_worker=1, gpus_per_worker=0)

Each actor loads its encoder once (backends.representations.encoders.get_image_encoder for images,
backends.plugins.get_text_encoder for MiniLM) and then embeds batch after batch. Images are read and
decoded inside the actor, the same way the app's loader does (RGB on white, letterboxed to 64×64),
so the vectors equal what the app would compute for the same files. A file that cannot be read
comes back with its reason in the `error` column, and the writer leaves it out and says so.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from backends.errors import InputError

TEXT_REGISTRY_DEFAULT = "minilm"


@dataclass(frozen=True)
class EncoderChoice:
    """What embeds a source: an image encoder spec, a text encoder by registry name, or nothing (vectors)."""

    kind: str  # "image": encode_images; "text": encode_texts of an image encoder; "minilm": the text registry; "none"
    name: str | None  # the canonical image spec, or the text registry name
    gpu: bool = False  # the encoder runs on a GPU when it has one (the Shapes encoders are CPU-only)

    def __str__(self) -> str:
        return self.name or "none (vectors as they are)"


def default_image_encoder() -> str:
    """The app's default image encoder: LATENT_ATLAS_ENCODER, else Settings' default ("shapes")."""
    from backends.settings import Settings

    return os.environ.get("LATENT_ATLAS_ENCODER") or Settings.encoder


def choose_encoder(source_kind: str, name: str | None) -> EncoderChoice:
    """The encoder for a source, checked here (one-line InputError for an unknown or unloadable one)."""
    from backends.plugins import TEXT_ENCODERS
    from backends.representations.encoders import canonical_spec, encoder_unavailable, parse_encoder_spec

    if source_kind in ("vectors", "hspace"):
        if name:
            raise InputError(f"--encoder {name}: this source holds vectors already ({source_kind}); they are kept as "
                             "they are, so leave --encoder out")
        return EncoderChoice("none", None)
    text_names = TEXT_ENCODERS.names()
    if source_kind == "text":
        name = name or TEXT_REGISTRY_DEFAULT
        if name in text_names:
            return EncoderChoice("minilm", name, gpu=True)
    elif source_kind == "images":
        name = name or default_image_encoder()
        if name in text_names:
            raise InputError(f"--encoder {name}: a text encoder; images need an image encoder "
                             "(shapes-cnn, shapes-vit, openclip:<arch>/<pretrained>, or an OpenCLIP folder)")
    else:
        raise AssertionError(source_kind)
    try:
        kind, _, _ = parse_encoder_spec(name)
    except InputError as exc:
        extra = f" (for text also: {', '.join(sorted(text_names))})" if source_kind == "text" else ""
        raise InputError(f"--encoder: {exc}{extra}") from None
    why = encoder_unavailable(name)
    if why:
        raise InputError(f"--encoder {name}: {why}")
    return EncoderChoice("image" if source_kind == "images" else "text", canonical_spec(name), gpu=kind != "shapes")


def _setup_worker(threads: int) -> str:
    """Threads for torch in this worker, and its device ("cuda" when Ray gave it a GPU)."""
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        import ray

        if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
            return "cuda"
    except ImportError:
        pass
    return "cpu"


def _vector_column(vectors: np.ndarray):
    from backends.ingest.write import vector_array

    return vector_array(vectors)


class ImageEmbedder:
    """Actor: read, decode, thumbnail and embed a batch of image items (rows of Source.items)."""

    def __init__(self, spec: str, threads: int = 1):
        from backends.representations.encoders import get_image_encoder

        self.device = _setup_worker(threads)
        self.encoder = get_image_encoder(spec, device=self.device)
        self.dim = int(self.encoder.dim)
        size = getattr(self.encoder, "image_size", None)
        self.size = int(size) if isinstance(size, (int, np.integer)) and size > 0 else None
        self._zips: dict[str, zipfile.ZipFile] = {}

    def _read(self, path: str, member: str) -> bytes:
        from backends.ingest.sources import MAX_IMAGE_BYTES

        if not member:
            if os.path.getsize(path) > MAX_IMAGE_BYTES:
                raise ValueError(f"over {MAX_IMAGE_BYTES // 2**20} MB")
            with open(path, "rb") as f:
                return f.read()
        zf = self._zips.get(path)
        if zf is None:
            zf = self._zips[path] = zipfile.ZipFile(path)
        return zf.read(member)

    def __call__(self, batch):
        import pyarrow as pa

        from backends.corpora.loaders import THUMBNAIL_SIZE, _decode_image, _letterbox
        from backends.ingest.write import png_bytes

        rows = batch.to_pylist()
        inputs, thumbs, widths, heights, errors = [], [], [], [], []
        for r in rows:
            try:
                im, (w, h) = _decode_image(self._read(r["path"], r["member"]))
                thumb = _letterbox(im, THUMBNAIL_SIZE)
                inputs.append(thumb if self.size is None else _letterbox(im, self.size))
                thumbs.append(png_bytes(thumb))
                widths.append(w)
                heights.append(h)
                errors.append("")
            except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped with its reason
                thumbs.append(b"")
                widths.append(0)
                heights.append(0)
                errors.append(f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__)
        vectors = np.zeros((len(rows), self.dim), np.float32)
        ok = [i for i, e in enumerate(errors) if not e]
        if ok:
            vectors[ok] = np.asarray(self.encoder.encode_images(np.stack(inputs)), np.float32)
        return pa.table({
            "id": pa.array([r["id"] for r in rows], pa.string()),
            "filename": pa.array([r["name"] for r in rows], pa.string()),
            "width": pa.array(widths, pa.int32()),
            "height": pa.array(heights, pa.int32()),
            "vector": _vector_column(vectors),
            "thumbnail": pa.array(thumbs, pa.binary()),
            "error": pa.array(errors, pa.string()),
        })


class TextEmbedder:
    """Actor: embed a batch's text column (MiniLM from the text registry, or an image encoder's text tower)."""

    def __init__(self, kind: str, name: str, column: str, threads: int = 1):
        self.device = _setup_worker(threads)
        self.column = column
        if kind == "minilm":
            from backends.plugins import get_text_encoder

            self.encode = get_text_encoder(name, device=self.device).encode_pooled
        else:
            from backends.representations.encoders import get_image_encoder

            self.encode = get_image_encoder(name, device=self.device).encode_texts

    def __call__(self, batch):
        texts = ["" if t is None else str(t) for t in batch.column(self.column).to_pylist()]
        vectors = np.asarray(self.encode(texts), np.float32) if texts else np.zeros((0, 1), np.float32)
        return batch.append_column("vector", _vector_column(vectors))


def embed(ds, source, choice: EncoderChoice, *, workers: int, cpus_per_worker: float, gpus_per_worker: float):
    """ds → ds with a `vector` column, embedded by an actor pool of `workers` encoders (vectors: unchanged)."""
    import ray.data

    if choice.kind == "none":
        return ds
    threads = max(1, int(cpus_per_worker))
    if choice.kind == "image":
        cls, kwargs = ImageEmbedder, {"spec": choice.name, "threads": threads}
    else:
        cls, kwargs = TextEmbedder, {"kind": choice.kind, "name": choice.name, "column": source.column,
                                     "threads": threads}
    resources = {"num_cpus": cpus_per_worker}
    if gpus_per_worker > 0:
        resources["num_gpus"] = gpus_per_worker
    # The sources make blocks of at most batch_size rows (Source.dataset), and each block is one call:
    # with batch_size set here, Ray Data would bundle small blocks into fewer, larger calls and leave workers idle.
    return ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="pyarrow",
                          compute=ray.data.ActorPoolStrategy(size=workers), **resources)


__all__ = ["EncoderChoice", "ImageEmbedder", "TextEmbedder", "choose_encoder", "default_image_encoder", "embed"]
