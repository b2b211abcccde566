"""How much an image changes along a direction, and the strip range read off that change curve.

    curve = change_curve(pipe, traj, direction, broken=check)   # one batched render of both sides
    curve.range, curve.reason                                     # e.g. 3.0, "first clear change at ±3σ"

A direction's σ-scaled default strength says nothing about what a given image does along it: on the
Shapes generator most directions change nothing up to 2–3σ and then jump (the background flips,
the object turns purple), and some break the image a little further out (two blobs, smears). The
strip's default range is therefore measured on the image being stripped:

- the image is edited by ±s for each s of a grid (one batched pass of 2 × len(grid) frames);
- change(s) = the larger of the two sides' visible change (a text direction's strip runs from 0 to +s,
  so only that side): the pixels whose colour moved by more than
  ``PIXEL_THRESHOLD`` (RGB distance), as a share of the scene's foreground (the pixels off the border
  colour in the unedited or the edited image, whichever is larger; at least 2% of the image), capped
  at 1. A small object that turns another colour or moves counts as fully changed, as it does for a
  person, where an RMS distance would call it a few percent;
- broken(s): a world's check (``backends.plugins.get_edit_check``) says an edited frame no longer
  shows a proper scene (Shapes: the object split into pieces or dissolved); without one, nothing
  counts as broken;
- the range is the smallest s whose change is clear (≥ ``CLEAR_CHANGE``) with nothing broken at or
  below it; when the image breaks before it changes clearly, the largest s below the first break;
  when it never changes clearly, the largest s of the grid.

So the strip's frames go from no change (the middle frame) to a clear change at both ends, and
never through a broken frame of the grid.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Strength grids in the direction's units: σ for h-space directions, the whole text shift for text ones.
H_GRID = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0)
TEXT_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# Models whose images are larger than SMALL_IMAGE pixels (Stable Diffusion: 512) take the short grids:
# each frame costs a whole denoising pass, and 8 frames instead of 18 keep the curve under a strip's cost.
SMALL_IMAGE = 64
H_GRID_SHORT = (1.0, 2.0, 4.0, 8.0)
TEXT_GRID_SHORT = (0.5, 1.0, 1.5, 2.0)
PIXEL_THRESHOLD = 60.0
# Visible change (share of the foreground) that a person sees as a change of the scene, not a wobble of
# its edges: on the Shapes generator a colour, position or background flip of one object measures 1.0,
# a size step 0.4-0.9, the wobble of an unchanged object's outline 0.05-0.3 (docs/directions.md).
CLEAR_CHANGE = 0.5


@dataclass
class ChangeCurve:
    strengths: np.ndarray  # (S,) grid, positive
    change: np.ndarray  # (S,) max over the two sides of the visible change
    broken: np.ndarray  # (S,) bool: a frame at +s or −s is broken
    range: float
    reason: str
    # (2S, H, W, 3): −s (descending), then +s; a text direction's (S, H, W, 3): +s only (its strip runs from 0)
    images: np.ndarray | None = field(default=None, repr=False)

    def summary(self) -> dict:
        return {"range": self.range, "reason": self.reason, "clear_change": CLEAR_CHANGE,
                "curve": [{"strength": float(s), "change": round(float(c), 4), "broken": bool(b)}
                          for s, c, b in zip(self.strengths, self.change, self.broken)]}


def _off_border(img: np.ndarray) -> np.ndarray:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.linalg.norm(img - np.median(border, axis=0), axis=-1) > PIXEL_THRESHOLD


def visible_change(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Visible change of each uint8 image (N, H, W, 3) from the reference (H, W, 3), in [0, 1]: the
    pixels whose colour moved by more than PIXEL_THRESHOLD, as a share of the foreground (see the
    module docstring)."""
    ref = np.asarray(reference, np.float32)
    fg_ref = int(_off_border(ref).sum())
    floor = 0.02 * ref.shape[0] * ref.shape[1]
    out = []
    for im in np.asarray(images, np.float32):
        moved = int((np.linalg.norm(im - ref, axis=-1) > PIXEL_THRESHOLD).sum())
        out.append(min(1.0, moved / max(fg_ref, int(_off_border(im).sum()), floor)))
    return np.asarray(out)


def choose_range(strengths, change, broken, *, clear: float = CLEAR_CHANGE) -> tuple[float, str]:
    """The strip range from a change curve (see the module docstring) and the reason, in words."""
    s = np.asarray(strengths, np.float64)
    change, broken = np.asarray(change, np.float64), np.asarray(broken, bool)
    first_break = int(np.argmax(broken)) if broken.any() else len(s)
    for i in range(first_break):
        if change[i] >= clear:
            return float(s[i]), f"first clear change at ±{s[i]:g} (visible change {change[i]:.2f})"
    if first_break < len(s):
        if first_break == 0:
            return float(s[0]), f"the image breaks already at ±{s[0]:g}: the smallest strength tried"
        i = first_break - 1
        return float(s[i]), (f"the image breaks at ±{s[first_break]:g} before it changes clearly; "
                             f"±{s[i]:g} is the largest strength below that (visible change {change[i]:.2f})")
    return float(s[-1]), f"little change up to ±{s[-1]:g} (visible change {change[-1]:.2f}): the largest strength tried"


def default_grid(text: bool, image_size: int) -> tuple[float, ...]:
    """The strengths a change curve tries: the full grid for small images (Shapes: 18 frames, under half
    a second on a CPU), the short one above SMALL_IMAGE pixels, where every frame is a full denoising pass."""
    if image_size > SMALL_IMAGE:
        return TEXT_GRID_SHORT if text else H_GRID_SHORT
    return TEXT_GRID if text else H_GRID


def change_curve(pipe, traj, direction, *, grid=None, broken: Callable | None = None, t_range=(0.0, 1.0),
                 delta_half: str = "both", keep_images: bool = False) -> ChangeCurve:
    """Edit row 0 of `traj` by ±s for each s of the grid and read the strip range off the change.

    broken(source (H, W, 3), frames (K, H, W, 3)) -> bool (K,): a world's check for broken frames.
    grid: the strengths to try (default: ``default_grid`` for the kind of direction and the image size).
    """
    from backends.generative import directions as D

    text = direction.kind == "text"
    if grid is None:
        grid = default_grid(text, int(traj.images.shape[1]) if traj.images is not None else SMALL_IMAGE)
    s = np.asarray(grid, np.float64)
    if s.ndim != 1 or not len(s) or np.any(s <= 0) or np.any(np.diff(s) <= 0):
        raise ValueError("the grid has to be increasing positive strengths")
    src = D._row(traj, 0) if traj.batch > 1 else traj
    base = src.images[0]
    if text:  # a text direction's strip runs from 0 to +s, and it edits with one strength a render
        imgs = np.concatenate([D.render(pipe, src, [direction], [v]) for v in s])
        change = visible_change(imgs, base)
        brk = np.zeros(len(s), bool) if broken is None else np.asarray(broken(base, imgs), bool)
    else:
        ss = np.concatenate([-s[::-1], s])
        imgs = D.render(pipe, src, [direction], ss[:, None], t_range=t_range, delta_half=delta_half)
        ch = visible_change(imgs, base)
        bad = np.zeros(len(ss), bool) if broken is None else np.asarray(broken(base, imgs), bool)
        n = len(s)
        change = np.maximum(ch[:n][::-1], ch[n:])
        brk = bad[:n][::-1] | bad[n:]
    r, why = choose_range(s, change, brk)
    return ChangeCurve(s, change, brk, r, why, imgs if keep_images else None)
