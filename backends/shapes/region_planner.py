"""The Shapes world's object planner for painted regions: the painted area says *where*, the
region's prompt says *what*.

A person paints a rough area (a rectangle, an ellipse, a stroke) and writes "a red star". The
Shapes generator's SpaText map was trained on silhouettes and on rough areas, yet it still draws
the painted outline more than the prompted shape (user-like layouts: shape right on 45% of the
regions, 2026-12-05). The planner turns each area whose prompt names a shape into that shape's
silhouette, fitted inside the area, before the map is built (as layout-first methods plan a layout
from words before drawing it):

- centre: the point of the area farthest from its edge, nearest the area's centroid among near-ties
  (so the object sits in the middle of a long stroke, not at one end);
- size: the largest radius (up to the Shapes world's "large" size) at which at least 80% of the
  silhouette lies in the area, clear of the other areas by a pixel at the model's size (with
  `strict`, as the prompt layout asks: none of the silhouette near another area; the painted
  regions measured better without it, 0.852 / 0.914 against 0.800 / 0.898);
- a size word ("small", "tiny", "big", …) caps the radius at that size of the world;
- shape: the first shape word in the prompt (any of the captions' words or plurals, longest first);
  an area whose prompt names no shape is kept as painted, and the notes say so.

No torch; numpy, scipy.ndimage and PIL only. Registered as the "shapes" region planner
(backends.plugins.get_region_planner).
"""
from __future__ import annotations

import re

import numpy as np

from backends.shapes import scenes

SUPERSAMPLE = 4  # silhouettes are drawn this much finer and area-averaged (soft edges)
MIN_INSIDE = 0.8  # share of the silhouette that has to lie in its area (0.8 of 0.75-0.97 measured best)
MAX_RADIUS = scenes.SIZE_RADIUS["large"]  # of the canvas side: the largest object the world has


def _shape_pattern() -> re.Pattern:
    words = {}
    for shape, ws in scenes.SHAPE_WORDS.items():
        for w in (*ws, scenes.SHAPE_PLURALS[shape], *(x + "es" if x.endswith("x") else x + "s" for x in ws)):
            words[w] = shape
    alts = sorted(words, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(map(re.escape, alts)) + r")\b"), words


_PATTERN, _WORD_SHAPE = _shape_pattern()


_SIZE_OF = {w: size for size, ws in scenes.SIZE_WORDS.items() for w in ws}
_SIZE_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _SIZE_OF), key=len, reverse=True)) + r")\b")


def size_in_prompt(prompt: str) -> str | None:
    """The size a prompt names ("a tiny red disc" -> "small"), or None."""
    m = _SIZE_PATTERN.search(str(prompt).lower())
    return _SIZE_OF[m.group(1)] if m else None


def shape_in_prompt(prompt: str) -> str | None:
    """The shape a prompt names first ("a crimson five-pointed star" -> "star"), or None."""
    m = _PATTERN.search(str(prompt).lower())
    return _WORD_SHAPE[m.group(1)] if m else None


def shapes_in_prompt(prompt: str) -> set[str]:
    """Every shape a prompt names ("two boxes and a star" -> {"square", "star"})."""
    return {_WORD_SHAPE[w] for w in _PATTERN.findall(str(prompt).lower())}


def draw_silhouette(shape: str, cx: float, cy: float, r: float, size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """A shape of nominal radius r (pixels) centred at pixel (cx, cy) of a size × size canvas, upright,
    as coverage in [0, 1] (float32)."""
    from PIL import Image, ImageDraw

    s = size * supersample
    img = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(img)
    X, Y, R = (cx + 0.5) * supersample, (cy + 0.5) * supersample, r * supersample
    if shape == "circle":
        draw.ellipse([X - R, Y - R, X + R, Y + R], fill=255)
    else:
        draw.polygon(scenes._polygon(shape, X, Y, R, 0.0), fill=255)
    return np.asarray(img, np.float32).reshape(size, supersample, size, supersample).mean((1, 3)) / 255.0


def fit_silhouette(shape: str, area: np.ndarray, others: np.ndarray | None = None, *, model_size: int = 32,
                   supersample: int = SUPERSAMPLE, max_radius: float = MAX_RADIUS,
                   clearance: int = 1, strict: bool = False) -> tuple[np.ndarray, float]:
    """The silhouette of `shape` fitted inside the bool mask `area` (H, W), kept a pixel (at the
    model's size; `clearance` pixels) away from `others` (bool (H, W), the other areas), at most
    `max_radius` of the side; `strict`: (almost) none of it within that clearance of the other areas
    (else only the 80% that has to lie in the area is kept clear). Returns (coverage float32 (H, W), radius in pixels of the mask)."""
    from scipy import ndimage

    area = np.asarray(area, bool)
    size = area.shape[0]
    if area.shape[0] != area.shape[1]:
        raise ValueError(f"areas must be square, but are {area.shape[0]} x {area.shape[1]}")
    if not area.any():
        raise ValueError("an empty area cannot hold an object")
    d = ndimage.distance_transform_edt(np.pad(area, 1))[1:-1, 1:-1]
    gap = max(1, round(clearance * size / model_size))
    ys, xs = np.nonzero(d >= d.max() - 0.75 * gap)
    my, mx = np.argwhere(area).mean(0)
    j = int(np.argmin((ys - my) ** 2 + (xs - mx) ** 2))
    cy, cx, r0 = int(ys[j]), int(xs[j]), float(d[ys[j], xs[j]])
    near = None if others is None or not np.any(others) else ndimage.binary_dilation(others, iterations=gap)
    room = area if near is None else area & ~near
    ss = supersample if size <= 128 else 1
    r = min(r0 * 0.6, max_radius * size)
    for f in np.linspace(1.6, 0.6, 21):
        r = min(r0 * f, max_radius * size)
        sil = draw_silhouette(shape, cx, cy, r, size, ss)
        if (sil * room).sum() >= MIN_INSIDE * sil.sum() and (
                not strict or near is None or (sil * near).sum() <= 0.02 * sil.sum()):
            return sil, r
    return draw_silhouette(shape, cx, cy, r, size, ss), r


def plan_objects(masks, prompts: list[str], *, model_size: int = 32, clearance: int = 1,
                 strict: bool = False) -> tuple[np.ndarray, list[str]]:
    """Painted areas (R, H, W) and their prompts -> (float32 (R, H, W) maps: each area whose prompt
    names a shape replaced by that shape's silhouette fitted inside it, notes in words)."""
    m = np.asarray(masks) > 0.5
    if m.ndim != 3 or len(m) != len(prompts):
        raise ValueError(f"expected one prompt per area, but got {len(prompts)} prompts for masks of shape {m.shape}")
    out = np.array(masks, np.float32)  # a copy: the caller's areas stay as they are
    notes, kept, small = [], [], []
    for k, p in enumerate(prompts):
        shape = shape_in_prompt(p)
        if not m[k].any():  # under half a pixel at the model's size: kept as painted
            small.append(repr(p))
            continue
        if shape is None:
            kept.append(repr(p))
            continue
        size = size_in_prompt(p)  # "a small red star": no larger than the world's small objects
        out[k], r = fit_silhouette(shape, m[k], np.delete(m, k, 0).any(0) if len(m) > 1 else None,
                                   model_size=model_size,
                                   max_radius=scenes.SIZE_RADIUS[size] if size else MAX_RADIUS, clearance=clearance,
                                   strict=strict)
        notes.append(f"{p!r}: a {shape} of radius {r / m.shape[1]:.0%} of the canvas inside its area")
    if notes:
        notes = ["object planner: " + "; ".join(notes)]
    if small:
        notes.append("object planner: the area for " + ", ".join(small) + " is too small to hold an object at the "
                     "model's size, so it is used as painted")
    if kept:
        notes.append("object planner: no shape named in " + ", ".join(kept) + ", so the painted area is used as it is")
    return out, notes


__all__ = ["plan_objects", "fit_silhouette", "draw_silhouette", "shape_in_prompt", "shapes_in_prompt", "size_in_prompt"]
