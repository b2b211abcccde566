"""Showing small model outputs at a size people can see.

The Shapes generator makes 32×32 images and the digits corpus holds 8×8 ones; an image component
shows them at their own size (a dot in a 320-pixel box). UI handlers enlarge them by an integer
factor with nearest-neighbour sampling (every model pixel becomes a crisp square, no blur that
was not in the output); API endpoints keep returning the model's own resolution.
"""
from __future__ import annotations

import numpy as np

DISPLAY_SIDE = 256


def enlarge(img, side: int = DISPLAY_SIDE) -> np.ndarray:
    """img (H, W[, C]) repeated k× along both axes, k the smallest integer with k·max(H, W) ≥ side
    (k = 1, the image unchanged, when it is already that large)."""
    img = np.asarray(img)
    k = max(1, -(-int(side) // max(img.shape[:2])))
    return img if k == 1 else np.repeat(np.repeat(img, k, 0), k, 1)
