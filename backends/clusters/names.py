"""Names for clusters: nearest candidate descriptions in a text–image space, and metadata majorities.

In the Shapes world the image encoders share a space with MiniLM captions, so a cluster's mean
image embedding can be compared with descriptions built from the Shapes vocabulary ("a red
circle", "blue shapes", "small shapes", "shapes in the top left"). A user's goal ("group by
colour") re-ranks the candidates GoalEx-style: candidates that describe the goal's factor are kept
(when the goal names one), and each candidate gains its MiniLM similarity to the goal.

    space = text_space_for(corpus)          # None where there is no text space (digits, uploads)
    names = name_clusters(centroids, space, goal="group by colour")
    names[0]   # [("red shapes", 0.61), ("a red star", 0.58), ...]

Any text–image encoder can name clusters of vectors made by its image tower (OpenCLIP, say):

    space = text_space_for(corpus, encoder=get_image_encoder("openclip:ViT-B-32/laion2b_s34b_b79k"))
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError

FACTORS = ("shape", "colour", "size", "position", "background")
# words in a goal that point at a factor (or at a metadata column of that name)
GOAL_WORDS: dict[str, tuple[str, ...]] = {
    "colour": ("colour", "color", "colours", "colors", "hue", "coloured", "colored"),
    "shape": ("shape", "shapes", "form", "forms", "geometry", "kind"),
    "size": ("size", "sizes", "big", "small", "scale", "large"),
    "position": ("position", "positions", "location", "where", "place", "layout", "corner", "side"),
    "background": ("background", "backdrop", "backgrounds"),
}
GOAL_WEIGHT = 0.5  # weight of sim(goal, candidate) in MiniLM space when re-ranking


@dataclass(frozen=True)
class Candidate:
    text: str
    factors: tuple[str, ...]  # which factors the description names


@dataclass
class TextSpace:
    """A text encoder aligned to the corpus's vectors, and the candidate descriptions to rank."""

    name: str
    encode_texts: Callable[[list[str]], np.ndarray]  # list of N strings -> (N, D) unit vectors
    candidates: list[Candidate]
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def candidate_vectors(self) -> np.ndarray:
        with self._lock:
            if self._vectors is None:
                v = np.asarray(self.encode_texts([c.text for c in self.candidates]), dtype=np.float32)
                self._vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            return self._vectors


def shapes_candidates() -> list[Candidate]:
    """Descriptions of the embedded world's factors (its registered vocabulary), each tagged with the
    factors it names."""
    from backends.plugins import DEFAULT_WORLD, get_vocabulary

    return get_vocabulary(DEFAULT_WORLD)()


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# descriptions for corpora outside the Shapes world, read by a general encoder such as OpenCLIP
GENERIC_OBJECTS = ("airplane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "person",
                   "face", "flower", "tree", "building", "house", "boat", "bicycle", "food", "fruit", "book",
                   "chair", "table", "computer", "phone", "animal", "fish", "insect", "mountain", "beach")
GENERIC_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
GENERIC_STYLES = ("a photo", "a drawing", "a painting", "a diagram", "a screenshot", "a sketch", "text")


def generic_candidates() -> list[Candidate]:
    """Descriptions for any images: digits, common objects, colours and kinds of picture."""
    out = [Candidate(f"the handwritten digit {n}", ("digit",)) for n in range(10)]
    out += [Candidate(f"a photo of {_a(o)} {o}", ("object",)) for o in GENERIC_OBJECTS]
    out += [Candidate(f"something {c}", ("colour",)) for c in GENERIC_COLOURS]
    out += [Candidate(s, ("style",)) for s in GENERIC_STYLES]
    return out


def text_space_for(corpus, encoder=None, candidates: list[Candidate] | None = None) -> TextSpace | None:
    """The text–image space of a corpus, or None where there is none.

    Without `encoder`: the Shapes encoder named in a Shapes corpus's description (None for digits, uploads,
    or when the Shapes weights are missing). With `encoder` (any object with `encode_texts`, `.name`, `.dim`,
    e.g. an OpenCLIP encoder from backends.representations.encoders, whose image tower made the corpus's vectors):
    that encoder's text tower, over `candidates` (default: Shapes descriptions for Shapes corpora, else
    generic_candidates()); None when the corpus's dimension differs from the encoder's.
    """
    if encoder is not None:
        if int(getattr(corpus, "dim", encoder.dim)) != int(encoder.dim):
            return None
        if candidates is None:
            candidates = shapes_candidates() if _is_shapes(corpus) else generic_candidates()
        return text_space_from_encoder(encoder, candidates)
    if not _is_shapes(corpus):
        return None
    from backends.plugins import DEFAULT_WORLD, get_encoder_family

    family = get_encoder_family(DEFAULT_WORLD)
    desc = getattr(corpus, "description", "") or ""
    enc_name = next((e for e in family.names() if e in desc), family.names()[0])
    try:
        enc = family.load(enc_name)
    except FileNotFoundError:
        return None
    if int(getattr(corpus, "dim", enc.dim)) != enc.dim:
        return None
    return _space_cache(enc_name, enc)


def _is_shapes(corpus) -> bool:
    return str(getattr(corpus, "name", "")).startswith("shapes")


def text_space_from_encoder(encoder, candidates: list[Candidate] | None = None) -> TextSpace:
    """A TextSpace over `encoder.encode_texts` (default candidates: the Shapes vocabulary); cached per
    (encoder name, candidate texts), so each candidate list is encoded once."""
    name = str(getattr(encoder, "name", type(encoder).__name__))
    for attr in ("encode_texts", "encode_images"):
        if not callable(getattr(encoder, attr, None)):
            raise InputError(f"encoder {name!r} has no {attr}(): cluster names need a text–image encoder")
    cands = list(candidates) if candidates is not None else shapes_candidates()
    if not cands:
        raise InputError(f"candidates for encoder {name!r} are empty: give at least one description")
    key = (name, tuple(c.text for c in cands))
    with _SPACES_LOCK:
        if key not in _ENCODER_SPACES:
            _ENCODER_SPACES[key] = TextSpace(name, encoder.encode_texts, cands)
        return _ENCODER_SPACES[key]


_SPACES: dict[str, TextSpace] = {}
_ENCODER_SPACES: dict[tuple, TextSpace] = {}
_SPACES_LOCK = threading.Lock()


def _space_cache(name: str, enc) -> TextSpace:
    with _SPACES_LOCK:
        if name not in _SPACES:
            _SPACES[name] = TextSpace(name, enc.encode_texts, shapes_candidates())
        return _SPACES[name]


def goal_factors(goal: str | None, columns: Sequence[str] = FACTORS) -> list[str]:
    """Factors (or metadata columns) a goal like 'group by colour' names, by keyword."""
    if not goal or not goal.strip():
        return []
    words = set(re.findall(r"[a-z]+", goal.lower()))
    found = [f for f in FACTORS if f in columns and words & set(GOAL_WORDS[f])]
    found += [c for c in columns if c not in found and c.lower() in words]
    return found


def name_clusters(centroids: np.ndarray, space: TextSpace, *, goal: str | None = None, top: int = 3,
                  goal_encoder: Callable[[list[str]], np.ndarray] | None = None) -> list[list[tuple[str, float]]]:
    """For each cluster, the `top` best candidate descriptions with scores (higher is better).

    centroids: (k, D) mean embeddings of each cluster in the space of `space`.
    Score = cos(cluster mean, text) + (cos − mean cos of all clusters to that text): similar to
    this cluster and more similar to it than to the others. With a goal: candidates naming only
    the goal's factors are kept when the goal names a factor; otherwise each score gains
    GOAL_WEIGHT × cos(goal, candidate) in MiniLM space (`goal_encoder`, default MiniLM pooled).
    """
    c = np.asarray(centroids, dtype=np.float32)
    if c.ndim != 2 or len(c) == 0:
        raise InputError(f"centroids must be a non-empty (k, D) array, but have shape {c.shape}")
    t = space.candidate_vectors()
    if c.shape[1] != t.shape[1]:
        raise InputError(f"centroids have {c.shape[1]} dimensions but the text space {space.name!r} has {t.shape[1]}")
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    sim = c @ t.T  # (k, T)
    score = sim + (sim - sim.mean(0, keepdims=True)) if len(c) > 1 else sim
    keep = np.ones(len(space.candidates), bool)
    factors = goal_factors(goal)
    if factors:
        keep = np.array([set(cd.factors) <= set(factors) for cd in space.candidates])
        if not keep.any():
            keep[:] = True
    elif goal and goal.strip():
        enc = goal_encoder or _minilm_pooled
        g = np.asarray(enc([goal]), dtype=np.float32)[0]
        cv = np.asarray(enc([cd.text for cd in space.candidates]), dtype=np.float32)
        score = score + GOAL_WEIGHT * (cv @ g)[None, :]
    score = np.where(keep[None, :], score, -np.inf)
    out = []
    for row in score:
        order = np.argsort(-row)[:top]
        out.append([(space.candidates[j].text, round(float(row[j]), 4)) for j in order if np.isfinite(row[j])])
    return out


def _minilm_pooled(texts: list[str]) -> np.ndarray:
    from backends.plugins import get_text_encoder

    return get_text_encoder("minilm").encode_pooled(list(texts))


def goal_features(vectors: np.ndarray, space: TextSpace, goal: str) -> tuple[np.ndarray, list[str]]:
    """GoalEx-style features: similarity of each item to the candidates that describe the goal's factor.

    Clustering these groups items by the goal ("by colour") rather than by whatever dominates the
    embedding. Returns ((N, T) float32, the candidate texts used).
    """
    factors = goal_factors(goal)
    if not factors:
        raise InputError(f"goal must name a factor ({', '.join(FACTORS)}), e.g. 'group by colour', but is {goal!r}")
    picks = [i for i, cd in enumerate(space.candidates) if set(cd.factors) == set(factors[:1])]
    if not picks:
        raise InputError(f"goal {goal!r}: the text space {space.name!r} has no descriptions of {factors[0]}")
    t = space.candidate_vectors()[picks]
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    f = x @ t.T
    f = f - f.mean(1, keepdims=True)  # what distinguishes the candidates, not overall similarity
    return np.ascontiguousarray(f, dtype=np.float32), [space.candidates[i].text for i in picks]


__all__ = ["Candidate", "TextSpace", "shapes_candidates", "generic_candidates", "text_space_for",
           "text_space_from_encoder", "goal_factors", "name_clusters", "goal_features", "FACTORS"]
