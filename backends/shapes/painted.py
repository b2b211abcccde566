"""Region maps that look like what a person paints: boxes, ellipses, brush blobs, dilated masks.

A person painting a region for "a red triangle" paints a rough area where the object should go,
not the triangle's silhouette. Trained only on silhouettes, the generator learned "the map is
the outline" and drew the painted rectangle instead of the prompted triangle. These samplers give
the training (and the user-like evaluation) regions that say *where*, larger than the object,
so the words have to say *what*.

    rough_region(bbox, kind, rng, size=32, silhouette=None)   -> float32 (size, size) in {0, 1}
    sample_rough_regions(bboxes, sil, rng, size=32)           -> (R, size, size), disjoint
    user_layout(rng, n_regions, size=32)                      -> (R, size, size) painted areas

A bbox is (x0, y0, x1, y1) in [0, 1] image units (y down). numpy only.
"""
from __future__ import annotations

import numpy as np

KINDS = ("silhouette", "dilated", "box", "ellipse", "blob")
# Training mix: mostly rough areas, some exact silhouettes (the silhouette protocol stays served).
KIND_P = (0.15, 0.15, 0.25, 0.25, 0.20)


def _grid(size: int):
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    return u[None, :], u[:, None]  # x (1, S), y (S, 1)


def _dilate(mask: np.ndarray, k: int) -> np.ndarray:
    """Binary dilation by a (2k+1)^2 square (numpy max filter)."""
    m = mask.astype(bool)
    for _ in range(k):
        p = np.pad(m, 1)
        m = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
             | p[:-2, :-2] | p[:-2, 2:] | p[2:, :-2] | p[2:, 2:])
    return m


def box(bbox, rng: np.random.Generator, size: int) -> np.ndarray:
    """An axis-aligned box around the object, each side pushed out by 0-0.25 of the image."""
    x, y = _grid(size)
    x0, y0, x1, y1 = bbox
    m = rng.uniform(0.0, 0.25, 4)
    return ((x >= x0 - m[0]) & (x <= x1 + m[1]) & (y >= y0 - m[2]) & (y <= y1 + m[3])).astype(np.float32)


def ellipse(bbox, rng: np.random.Generator, size: int) -> np.ndarray:
    """A rotated ellipse, centre jittered, grown until it covers the object's box."""
    x, y = _grid(size)
    x0, y0, x1, y1 = bbox
    cx, cy = (x0 + x1) / 2 + rng.uniform(-0.05, 0.05), (y0 + y1) / 2 + rng.uniform(-0.05, 0.05)
    a = max(x1 - x0, 0.04) / 2 * rng.uniform(1.0, 1.8) + rng.uniform(0.0, 0.06)
    b = max(y1 - y0, 0.04) / 2 * rng.uniform(1.0, 1.8) + rng.uniform(0.0, 0.06)
    th = rng.uniform(0, np.pi)
    c, s = np.cos(th), np.sin(th)

    def q(px, py):
        dx, dy = px - cx, py - cy
        return ((c * dx + s * dy) / a) ** 2 + ((-s * dx + c * dy) / b) ** 2

    corners = [(x0, y0), (x0, y1), (x1, y0), (x1, y1)]
    grow = max(1.0, max(np.sqrt(q(px, py)) for px, py in corners))
    return (q(x, y) <= grow ** 2).astype(np.float32)


def blob(bbox, rng: np.random.Generator, size: int) -> np.ndarray:
    """Brush-like: a union of jittered discs covering the object's box, plus a few strays."""
    x, y = _grid(size)
    x0, y0, x1, y1 = bbox
    rad = rng.uniform(0.07, 0.13)
    out = np.zeros((size, size), bool)
    step = rad * 1.1
    for cx in np.arange(x0, x1 + 1e-6, step) if x1 - x0 > step else [(x0 + x1) / 2]:
        for cy in np.arange(y0, y1 + 1e-6, step) if y1 - y0 > step else [(y0 + y1) / 2]:
            jx, jy = rng.uniform(-rad / 2, rad / 2, 2)
            out |= (x - cx - jx) ** 2 + (y - cy - jy) ** 2 <= (rad * rng.uniform(1.0, 1.4)) ** 2
    for _ in range(int(rng.integers(0, 5))):  # strokes past the object
        cx = rng.uniform(x0 - 0.12, x1 + 0.12)
        cy = rng.uniform(y0 - 0.12, y1 + 0.12)
        out |= (x - cx) ** 2 + (y - cy) ** 2 <= (rad * rng.uniform(0.8, 1.3)) ** 2
    # the painted area covers the whole object's box (a person paints over the object)
    out |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return out.astype(np.float32)


def upsample(mask: np.ndarray, size: int) -> np.ndarray:
    """A coverage mask at a divisor of `size`, repeated up to (size, size) (area-pooling it back
    gives the same values)."""
    f = size // mask.shape[-1]
    return np.repeat(np.repeat(mask.astype(np.float32), f, -2), f, -1) if f > 1 else mask.astype(np.float32)


def dilated(silhouette: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """The object's mask, dilated by 1-4 pixels and shifted by up to 1 pixel (kept covering it)."""
    m = upsample(silhouette, size) >= 0.5
    d = _dilate(m, int(rng.integers(1, 5)))
    sx, sy = rng.integers(-1, 2, 2)
    d = np.roll(np.roll(d, int(sx), 1), int(sy), 0) | m
    return d.astype(np.float32)


def rough_region(bbox, kind: str, rng: np.random.Generator, size: int = 32,
                 silhouette: np.ndarray | None = None) -> np.ndarray:
    """One region of the given kind around the object with box `bbox`; `silhouette` (a coverage
    mask at size or a divisor of it) is needed for "silhouette" and "dilated"."""
    if kind in ("silhouette", "dilated"):
        if silhouette is None:
            raise ValueError(f"a {kind!r} region needs the object's silhouette")
        return upsample(silhouette, size) if kind == "silhouette" else dilated(silhouette, rng, size)
    if kind == "box":
        return box(bbox, rng, size)
    if kind == "ellipse":
        return ellipse(bbox, rng, size)
    if kind == "blob":
        return blob(bbox, rng, size)
    raise ValueError(f"Unknown region kind: {kind!r}. Must be one of: {', '.join(KINDS)}")


def sample_rough_regions(bboxes, silhouettes: np.ndarray, rng: np.random.Generator, size: int = 32,
                         kind_p=KIND_P) -> np.ndarray:
    """Regions for a scene's objects (R of them; bboxes (R, 4), silhouettes (R, h, w) coverage).

    Each object gets a region of a random kind (one kind per scene, as one person paints one way).
    Regions are made disjoint as a painted canvas is: where two overlap, the later object's region
    wins, except on an object's own visible pixels, which stay in its region.
    """
    R = len(bboxes)
    kind = KINDS[int(rng.choice(len(KINDS), p=np.asarray(kind_p) / np.sum(kind_p)))]
    regs = np.stack([rough_region(bboxes[r], kind, rng, size, silhouettes[r]) for r in range(R)]) if R else \
        np.zeros((0, size, size), np.float32)
    if R > 1 and kind != "silhouette":
        own = upsample(silhouettes, size) >= 0.5
        owner = np.full((size, size), -1)
        for r in range(R):
            owner[regs[r] > 0] = r
        for r in range(R):
            owner[own[r]] = r
        regs = np.stack([(owner == r).astype(np.float32) for r in range(R)])
    return regs


def user_layout(rng: np.random.Generator, n_regions: int, size: int = 32, *,
                min_cover: float = 0.10, max_cover: float = 0.60, tries: int = 200) -> np.ndarray:
    """Painted regions as a user makes them for the user-like evaluation: rectangles, ellipses or
    free strokes, each covering min_cover-max_cover of the canvas, not overlapping (a later region
    would paint over an earlier one), drawn without reference to any object. (R, size, size)."""
    x, y = _grid(size)
    taken = np.zeros((size, size), bool)
    out = []
    for _ in range(n_regions):
        for _ in range(tries):
            kind = ("rectangle", "ellipse", "stroke")[int(rng.integers(3))]
            w, h = rng.uniform(0.25, 0.8, 2)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            if kind == "rectangle":
                m = (np.abs(x - cx) <= w / 2) & (np.abs(y - cy) <= h / 2)
            elif kind == "ellipse":
                m = ((x - cx) / (w / 2)) ** 2 + ((y - cy) / (h / 2)) ** 2 <= 1
            else:  # a thick free stroke: discs along a wobbly line
                m = np.zeros((size, size), bool)
                rad = rng.uniform(0.08, 0.16)
                p0 = np.array([cx - w / 2 + rad, cy + rng.uniform(-h, h) / 2])
                p1 = np.array([cx + w / 2 - rad, cy + rng.uniform(-h, h) / 2])
                if rng.random() < 0.5:
                    p0, p1 = p0[::-1].copy(), p1[::-1].copy()
                wob = rng.uniform(-0.1, 0.1, 2)
                for t in np.linspace(0, 1, 12):
                    c = (1 - t) * p0 + t * p1 + wob * np.sin(np.pi * t)
                    m |= (x - c[0]) ** 2 + (y - c[1]) ** 2 <= rad ** 2
            cover = m.mean()
            if min_cover <= cover <= max_cover and not (m & taken).any():
                out.append(m.astype(np.float32))
                taken |= m
                break
        else:
            break
    return np.stack(out) if out else np.zeros((0, size, size), np.float32)


__all__ = ["KINDS", "KIND_P", "rough_region", "sample_rough_regions", "user_layout", "upsample"]
