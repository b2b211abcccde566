"""The "shapes" corpus: held-out Shapes scenes embedded by a contrastive Shapes encoder.

    corpus = load_corpus("shapes", n=2000)              # vectors from shapes-cnn
    q = text_query_vector("red triangles", "shapes-cnn")  # (D,) in the same space
    scores = corpus.vectors @ q
"""
from __future__ import annotations

import threading

import numpy as np

from backends.corpora.corpus import Corpus, register_corpus
from backends.errors import InputError

MAX_SCENES = 100_000
_CACHE: dict[tuple, Corpus] = {}
_LOCK = threading.Lock()


@register_corpus("shapes", "Shapes world: procedural scenes of coloured shapes with known factors")
def load_shapes_corpus(n: int = 2000, *, encoder: str = "shapes-cnn", seed: int = 0, size: int = 64,
                       single: bool = False) -> Corpus:
    """Shapes world: procedural scenes of coloured shapes with known factors.

    n scenes from the test split (never seen in training), embedded by `encoder`
    ("shapes-cnn" or "shapes-vit"); meta has shape, colour, size, position (of the first object),
    background, n_objects and caption; thumbnails are the scenes themselves (size x size).
    single=True gives one object per scene.
    """
    from backends.shapes.encoders import available_encoders, load_image_encoder

    try:
        n = int(n)
    except (TypeError, ValueError):
        raise InputError(f"n must be a whole number of scenes, but is {n!r}") from None
    if not 2 <= n <= MAX_SCENES:
        raise InputError(f"n must be between 2 and {MAX_SCENES}, but is {n}")
    if encoder not in available_encoders():
        raise InputError(f"Unknown encoder: {encoder!r}. Must be one of: {', '.join(available_encoders())}")
    if size not in (32, 64, 96, 128):
        raise InputError(f"size must be one of 32, 64, 96, 128, but is {size}")
    key = (n, encoder, int(seed), size, bool(single))
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    from backends.shapes import scenes

    batch = scenes.make_batch(n, seed=int(seed), split="test", size=size, single=single)
    enc = load_image_encoder(encoder)
    vectors = enc.encode_images(batch.images)
    meta = batch.factors[["shape", "colour", "size", "position", "background", "n_objects"]].copy()
    meta.insert(0, "id", [f"shapes-{seed}-{i}" for i in range(n)])
    meta["rotation"] = batch.factors["rotation"].round(1)
    meta["caption"] = batch.captions
    meta["objects"] = [", ".join(f"{o.colour} {o.shape}" for o in sp.objects) for sp in batch.specs]
    corpus = Corpus(
        name="shapes",
        vectors=vectors,
        meta=meta,
        images=batch.images,
        texts=list(batch.captions),
        description=f"{n} procedural Shapes scenes (test split, seed {seed}), {enc.dim}-d {encoder} embeddings",
        text_query=lambda text: text_query_vector(text, encoder),  # Atlas: search by meaning
    )
    with _LOCK:
        _CACHE[key] = corpus
    return corpus


def text_query_vector(text: str, encoder_name: str = "shapes-cnn") -> np.ndarray:
    """A free-text query ("red triangles") as a unit vector (D,) float32 in the encoder's image space."""
    from backends.shapes.encoders import available_encoders, load_image_encoder

    if not isinstance(text, str):
        raise InputError(f"text must be a string, but is {type(text).__name__}")
    if not text.strip():
        raise InputError("text is empty: type what to look for, e.g. 'red triangles'")
    if encoder_name not in available_encoders():
        raise InputError(f"Unknown encoder: {encoder_name!r}. Must be one of: {', '.join(available_encoders())}")
    return load_image_encoder(encoder_name).encode_texts([text])[0]
