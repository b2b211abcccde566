"""Is an edited Shapes image still a proper scene? (the Directions strip's check for broken frames)

A Shapes scene is objects on a plain background. An edit pushed too far breaks that: the object
splits into blobs, or colour smears spread over the background. A frame counts as broken when

- its number of objects differs from the unedited image's (objects: connected groups of pixels of one
  world colour, at least ``MIN_PIXELS`` pixels and ``MIN_SHARE`` of the largest object, among the
  pixels that differ from the background colour by more than ``DIFF_THRESHOLD`` and lie within
  ``PALETTE_DISTANCE`` of a world colour; two touching blobs of different colours are two objects,
  the blended rim of one object is none), or
- more than ``BORDER_SHARE`` of its border pixels differ from the border's median colour more than
  the unedited image's border does (the background is no longer plain).

A change of colour, size, position, shape or background colour is not a break.
"""
from __future__ import annotations

import numpy as np

DIFF_THRESHOLD = 60.0  # RGB distance from the background colour (as the regions eval)
MIN_PIXELS = 4
MIN_SHARE = 0.15
BORDER_SHARE = 0.15
PALETTE_DISTANCE = 80.0


def _border(img: np.ndarray) -> np.ndarray:
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])


def count_objects(image: np.ndarray) -> int:
    """Objects in a uint8 (H, W, 3) image: sizeable connected groups of pixels off the background colour."""
    from scipy import ndimage

    from backends.shapes import scenes

    img = np.asarray(image, np.float32)
    bg = np.median(_border(img), axis=0)
    pal = np.asarray(list(scenes.COLOURS.values()), np.float32)
    dist = np.sqrt(((img[..., None, :] - pal) ** 2).sum(-1))  # (H, W, colours)
    cls = dist.argmin(-1)
    fg = (np.linalg.norm(img - bg, axis=-1) > DIFF_THRESHOLD) & (dist.min(-1) < PALETTE_DISTANCE)
    areas = []
    for c in np.unique(cls[fg]):
        lab, n = ndimage.label(fg & (cls == c))
        areas += list(np.bincount(lab.ravel())[1:])
    if not areas:
        return 0
    areas = np.asarray(areas)
    return int(np.sum(areas >= max(MIN_PIXELS, MIN_SHARE * areas.max())))


def border_off(image: np.ndarray) -> float:
    """Share of border pixels that differ from the border's median colour."""
    b = _border(np.asarray(image, np.float32))
    return float(np.mean(np.linalg.norm(b - np.median(b, axis=0), axis=-1) > DIFF_THRESHOLD))


def broken_frames(source: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """bool (K,): which edited frames (K, H, W, 3) of the source image (H, W, 3) are broken."""
    n0, b0 = count_objects(source), border_off(source)
    return np.asarray([count_objects(f) != n0 or border_off(f) > b0 + BORDER_SHARE for f in frames], bool)
