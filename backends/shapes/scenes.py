"""Deterministic procedural scenes of coloured shapes with known factors.

A scene is 1-3 objects (shape, colour, size, position, rotation) on a neutral background.
Everything is derived from a seed: no data files. numpy + PIL only (no torch).

    batch = make_batch(1000, seed=0, split="train", size=32)
    batch.images   # (N, H, W, 3) uint8
    batch.masks    # list of N bool arrays (n_objects, H, W): visible pixels of each object
    batch.captions # list of N strings with varied wording
    batch.factors  # DataFrame, one row per scene (factors of the first object + scene-level)

Rendering is anti-aliased: objects are drawn as a label map at 4x resolution, the image is the
per-pixel coverage-weighted mix of object and background colours, and an object's mask is the
set of pixels where at least half of the pixel is that object (visible after occlusion; objects
later in ``SceneSpec.objects`` are drawn on top).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------
# Vocabulary

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (35, 170, 55),
    "cyan": (40, 210, 225),
    "blue": (35, 70, 225),
    "purple": (140, 45, 205),
    "pink": (250, 120, 195),
}

SIZES: tuple[str, ...] = ("small", "medium", "large")
# Object radius as a fraction of the image side (shapes are scaled to look about equally big).
SIZE_RADIUS: dict[str, float] = {"small": 0.13, "medium": 0.19, "large": 0.25}

# 3x3 grid, row-major from the top left. y grows downwards (image convention).
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
GRID: tuple[float, float, float] = (0.23, 0.5, 0.77)  # cell centres along each axis
POSITION_JITTER = 0.04  # uniform jitter of the centre inside a cell

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (18, 18, 18),
    "dark grey": (70, 70, 70),
    "grey": (128, 128, 128),
    "white": (238, 238, 238),
}

# Words used in captions. The first entry of each list is the canonical word.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape", "disk"),
    "square": ("square", "box", "block", "quadrilateral"),
    "triangle": ("triangle", "triangular shape", "three-sided shape", "wedge"),
    "star": ("star", "five-pointed star", "starburst", "star shape"),
    "cross": ("cross", "plus sign", "plus", "x shape"),
}
SHAPE_PLURALS: dict[str, str] = {
    "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "grass-green"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "cobalt", "royal blue"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "hot pink"),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
# (canonical prepositional phrase, other phrasings with a preposition, bare phrasings)
POSITION_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "top left": (("in the top left", "in the upper left", "in the top-left corner"), ("top left", "upper left", "top-left corner")),
    "top": (("at the top", "at the top middle", "along the top edge"), ("top", "top middle", "upper middle")),
    "top right": (("in the top right", "in the upper right", "in the top-right corner"), ("top right", "upper right", "top-right corner")),
    "left": (("on the left", "at the middle left", "on the left side"), ("left", "middle left", "left side")),
    "center": (("in the center", "in the middle", "in the centre"), ("center", "middle", "centre")),
    "right": (("on the right", "at the middle right", "on the right side"), ("right", "middle right", "right side")),
    "bottom left": (("in the bottom left", "in the lower left", "in the bottom-left corner"), ("bottom left", "lower left", "bottom-left corner")),
    "bottom": (("at the bottom", "at the bottom middle", "along the bottom edge"), ("bottom", "bottom middle", "lower middle")),
    "bottom right": (("in the bottom right", "in the lower right", "in the bottom-right corner"), ("bottom right", "lower right", "bottom-right corner")),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black", "dark", "jet black"),
    "dark grey": ("dark grey", "charcoal", "dark gray"),
    "grey": ("grey", "gray", "mid-grey"),
    "white": ("white", "light", "off-white"),
}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
SUPERSAMPLE = 4


# ---------------------------------------------------------------------------------------
# Specs

@dataclass
class ObjectSpec:
    """One object. x, y: centre in [0, 1] (y down); rotation in degrees (counter-clockwise)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    rotation: float = 0.0

    @property
    def position(self) -> str:
        """The 3x3 grid cell the centre falls in."""
        return POSITIONS[3 * _cell(self.y) + _cell(self.x)]


@dataclass
class SceneSpec:
    objects: list[ObjectSpec]
    background: str = "black"


@dataclass
class ShapesBatch:
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: list[np.ndarray]  # N bool arrays (n_objects, H, W)
    captions: list[str]
    specs: list[SceneSpec]
    factors: pandas.DataFrame  # noqa: F821

    def __len__(self) -> int:
        return len(self.specs)


def _cell(v: float) -> int:
    return 0 if v < 1 / 3 else (1 if v < 2 / 3 else 2)


def position_centre(position: str) -> tuple[float, float]:
    """(x, y) centre of a named grid cell."""
    if position not in POSITIONS:
        raise ValueError(f"Unknown position: {position!r}. Must be one of: {', '.join(POSITIONS)}")
    i = POSITIONS.index(position)
    return GRID[i % 3], GRID[i // 3]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def sample_object(rng: np.random.Generator, *, cell: int | None = None) -> ObjectSpec:
    """Sample one object uniformly over the factors (optionally in a given grid cell 0..8)."""
    if cell is None:
        cell = int(rng.integers(9))
    jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    shape = _pick(rng, SHAPES)
    colour = _pick(rng, tuple(COLOURS))
    size = _pick(rng, SIZES)
    rotation = float(rng.uniform(0.0, 360.0)) if shape != "circle" else 0.0
    return ObjectSpec(shape, colour, size, float(GRID[cell % 3] + jx), float(GRID[cell // 3] + jy), rotation)


def sample_scene(rng: np.random.Generator, *, n_objects: int | None = None, single: bool = False) -> SceneSpec:
    """Sample a scene: 1-3 objects in distinct grid cells, placed so they barely overlap.

    single=True is the same as n_objects=1.
    """
    if single:
        n_objects = 1
    if n_objects is None:
        n_objects = int(rng.integers(1, 4))
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, but is {n_objects}")
    background = _pick(rng, tuple(BACKGROUNDS))
    objects: list[ObjectSpec] = []
    for _ in range(50):  # rejection sampling; at most 3 objects so this ends fast
        cells = rng.permutation(9)[:n_objects]
        objects = [sample_object(rng, cell=int(c)) for c in cells]
        if _placement_ok(objects):
            break
    return SceneSpec(objects=objects, background=background)


def _placement_ok(objects: list[ObjectSpec]) -> bool:
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = objects[i], objects[j]
            d = math.hypot(a.x - b.x, a.y - b.y)
            if d < 0.85 * (SIZE_RADIUS[a.size] + SIZE_RADIUS[b.size]):
                return False
    return True


# ---------------------------------------------------------------------------------------
# Rendering

def _polygon(shape: str, cx: float, cy: float, r: float, rotation: float) -> list[tuple[float, float]]:
    """Vertices of a shape of nominal radius r (pixels), rotated by `rotation` degrees."""
    rot = math.radians(rotation)
    if shape == "square":
        pts = [(1.12 * r, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    elif shape == "triangle":
        pts = [(1.3 * r, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    elif shape == "star":
        pts = [((1.3 if k % 2 == 0 else 0.55) * r, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    elif shape == "cross":
        a, w = 1.1 * r, 0.38 * r  # arm length and half-width
        xy = [(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a), (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)]
        pts = [(math.hypot(px, py), math.atan2(py, px)) for px, py in xy]
    else:
        raise ValueError(f"Unknown shape: {shape!r}. Must be one of: {', '.join(SHAPES)}")
    # y grows downwards in images, so a counter-clockwise rotation subtracts the angle.
    return [(cx + rho * math.cos(t - rot), cy + rho * math.sin(t - rot)) for rho, t in pts]


def _check_spec(spec: SceneSpec) -> None:
    if spec.background not in BACKGROUNDS:
        raise ValueError(f"Unknown background: {spec.background!r}. Must be one of: {', '.join(BACKGROUNDS)}")
    for o in spec.objects:
        if o.shape not in SHAPES:
            raise ValueError(f"Unknown shape: {o.shape!r}. Must be one of: {', '.join(SHAPES)}")
        if o.colour not in COLOURS:
            raise ValueError(f"Unknown colour: {o.colour!r}. Must be one of: {', '.join(COLOURS)}")
        if o.size not in SIZES:
            raise ValueError(f"Unknown size: {o.size!r}. Must be one of: {', '.join(SIZES)}")


def render_labels(spec: SceneSpec, size: int = 64, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """uint8 label map (size*supersample)^2: 0 = background, i+1 = object i (later on top)."""
    from PIL import Image, ImageDraw

    s = size * supersample
    img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(img)
    for i, o in enumerate(spec.objects):
        cx, cy, r = o.x * s, o.y * s, SIZE_RADIUS[o.size] * s
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=i + 1)
        else:
            draw.polygon(_polygon(o.shape, cx, cy, r, o.rotation), fill=i + 1)
    return np.asarray(img)


def render(spec: SceneSpec, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene. Returns (image uint8 (H, W, 3), masks bool (n_objects, H, W))."""
    _check_spec(spec)
    if size < 8:
        raise ValueError(f"size must be at least 8, but is {size}")
    ss = SUPERSAMPLE
    labels = render_labels(spec, size, ss)
    n = len(spec.objects)
    cov = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        cov[i] = (labels == i + 1).reshape(size, ss, size, ss).sum(axis=(1, 3), dtype=np.float32)
    cov *= 1.0 / (ss * ss)
    bg = np.asarray(BACKGROUNDS[spec.background], dtype=np.float32)
    if n:
        cols = np.asarray([COLOURS[o.colour] for o in spec.objects], dtype=np.float32) - bg  # (n, 3)
        img = bg + np.tensordot(cov, cols, axes=([0], [0]))  # (H, W, 3)
    else:
        img = np.broadcast_to(bg, (size, size, 3))
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    masks = cov >= 0.5
    for i in range(n - 2, -1, -1):  # a pixel split exactly half and half goes to the object on top
        masks[i] &= ~masks[i + 1:].any(0)
    return image, masks


# ---------------------------------------------------------------------------------------
# Captions

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(o: ObjectSpec, rng: np.random.Generator, *, with_size: bool, with_position: bool,
                   article: bool = True) -> str:
    words = []
    if with_size:
        words.append(_pick(rng, SIZE_WORDS[o.size]))
    words.append(_pick(rng, COLOUR_WORDS[o.colour]))
    words.append(_pick(rng, SHAPE_WORDS[o.shape]))
    phrase = " ".join(words)
    if article:
        phrase = f"{_article(phrase)} {phrase}"
    if with_position:
        phrase += " " + _pick(rng, POSITION_WORDS[o.position][0])
    return phrase


def caption(spec: SceneSpec, rng: np.random.Generator) -> str:
    """A caption with varied wording (templates, synonyms, optional size/position/background)."""
    objs = spec.objects
    bg_word = _pick(rng, BACKGROUND_WORDS[spec.background])
    r = rng.random(3)
    with_size, with_pos, with_bg = r[0] < 0.7, r[1] < 0.7, r[2] < 0.35
    if len(objs) == 1:
        o = objs[0]
        t = int(rng.integers(7))
        if t == 0:  # "crimson disc, upper left"
            text = _object_phrase(o, rng, with_size=with_size, with_position=False, article=False)
            if with_pos:
                text += ", " + _pick(rng, POSITION_WORDS[o.position][1])
        elif t == 1:  # "upper left: a red circle"
            text = _pick(rng, POSITION_WORDS[o.position][1]) + ": " + _object_phrase(o, rng, with_size=with_size, with_position=False)
        elif t == 2:
            text = "there is " + _object_phrase(o, rng, with_size=with_size, with_position=with_pos)
        elif t == 3:
            text = "a picture of " + _object_phrase(o, rng, with_size=with_size, with_position=with_pos)
        elif t == 4:
            text = _object_phrase(o, rng, with_size=with_size, with_position=with_pos, article=False)
        else:
            text = _object_phrase(o, rng, with_size=with_size, with_position=with_pos)
    else:
        phrases = [_object_phrase(o, rng, with_size=with_size, with_position=with_pos) for o in objs]
        joined = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        t = int(rng.integers(3))
        if t == 0:
            text = f"{NUMBER_WORDS[len(objs)]} objects: {joined}"
        elif t == 1:
            text = f"{NUMBER_WORDS[len(objs)]} shapes, {joined}"
        else:
            text = joined
    if with_bg:
        text += _pick(rng, (f" on a {bg_word} background", f", {bg_word} background", f" against a {bg_word} backdrop"))
    return text


def canonical_caption(spec: SceneSpec) -> str:
    """The plain caption: 'a small red circle in the top left and ... on a black background'."""
    parts = []
    for o in spec.objects:
        phrase = f"{o.size} {o.colour} {o.shape}"
        parts.append(f"{_article(phrase)} {phrase} {POSITION_WORDS[o.position][0][0]}")
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{joined} on a {spec.background} background"


# ---------------------------------------------------------------------------------------
# Batches and splits

def split_rng(split: str, seed: int) -> np.random.Generator:
    """The generator for (split, seed). Different splits draw from independent streams."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split: {split!r}. Must be one of: {', '.join(SPLITS)}")
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, but is {seed}")
    # A fixed tag makes these streams distinct from np.random.default_rng(seed) used elsewhere.
    return np.random.default_rng(np.random.SeedSequence([0x5A4E, SPLITS[split], int(seed)]))


def factors_table(specs: list[SceneSpec]) -> pandas.DataFrame:  # noqa: F821
    """One row per scene: first object's factors plus background and n_objects."""
    import pandas as pd

    rows = []
    for sp in specs:
        o = sp.objects[0]
        rows.append((o.shape, o.colour, o.size, o.position, o.x, o.y, o.rotation, sp.background, len(sp.objects)))
    return pd.DataFrame(rows, columns=["shape", "colour", "size", "position", "x", "y", "rotation", "background", "n_objects"])


def make_batch(n: int, *, seed: int, split: str = "train", size: int = 64, single: bool = False,
               n_objects: int | None = None) -> ShapesBatch:
    """n scenes from (split, seed). The first k scenes of a batch do not depend on n."""
    if n < 0:
        raise ValueError(f"n must be non-negative, but is {n}")
    rng = split_rng(split, seed)
    specs, captions = [], []
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    masks = []
    for i in range(n):
        sp = sample_scene(rng, n_objects=n_objects, single=single)
        captions.append(caption(sp, rng))
        images[i], m = render(sp, size)
        masks.append(m)
        specs.append(sp)
    return ShapesBatch(images=images, masks=masks, captions=captions, specs=specs, factors=factors_table(specs))


__all__ = [
    "SHAPES", "COLOURS", "SIZES", "POSITIONS", "BACKGROUNDS", "SPLITS",
    "ObjectSpec", "SceneSpec", "ShapesBatch",
    "sample_object", "sample_scene", "render", "caption", "canonical_caption", "make_batch",
    "factors_table", "split_rng", "position_centre",
]
