"""Several objects from one prompt: "a red circle and a blue square on a black background".

The Shapes generator draws one object well from words (shape and colour right on 89% of canonical
test prompts) but two asked objects right only about one time in ten: it was trained mostly on
single objects, and its text path has no notion of which words belong to which object. Its region
map does (docs/regions.md: with the object planner, 85% of painted regions right). So a prompt that
names two or more objects is laid out first, as layout-first methods do with a language model:

1. the background phrase ("on a black background", "against a dark backdrop", ", light
   background") becomes the global prompt;
2. the rest is split into object phrases at "and", commas, "next to", "beside";
3. each object phrase keeps its position words ("in the top left", "on the right"; the captions'
   words) as its area, a cell of a 3×3 grid grown to half the canvas; objects without position words
   share the canvas side by side (left to right, in the order named), avoiding the named cells;
4. each area becomes its object's shape, fitted inside (region_planner.plan_objects), and the
   region map carries each object's phrase.

A prompt that names fewer than two shapes is not laid out (None): one object is drawn from words.
No torch; numpy, scipy and PIL only. Registered as the "shapes" prompt layout
(backends.plugins.get_prompt_layout).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from backends.shapes import scenes
from backends.shapes.region_planner import plan_objects, shape_in_prompt

MAX_OBJECTS = 3  # the world's scenes hold at most three objects
CLEARANCE = 2  # model pixels kept between one object's silhouette and the next area (1 let drawn objects touch)
_BACKGROUND = re.compile(
    r"(?:,\s*|\s+)?(?:(?:on|against|over)\s+(?:a|an|the)\s+)?((?:[a-z\-]+\s+){0,2}?)(?:background|backdrop)\b")
_SPLIT = re.compile(r"\s*(?:,\s*and\b|,|;|\band\b|\bnext to\b|\bbeside\b|\bplus\s+(?=an?\b))\s*")
_CELL = {pos: (i % 3, i // 3) for i, pos in enumerate(scenes.POSITIONS)}  # grid column, row


def _position_words() -> list[tuple[str, str]]:
    out = []
    for pos, (full, short) in scenes.POSITION_WORDS.items():
        out += [(w, pos) for w in (*full, *short)]
    return sorted(out, key=lambda x: len(x[0]), reverse=True)


_POSITIONS = _position_words()


@dataclass
class PromptLayout:
    """A prompt laid out: areas (R, S, S) bool, the planned maps (R, S, S) float, one phrase each, the
    global prompt (the background phrase, or ""), and notes in words."""

    areas: np.ndarray
    maps: np.ndarray
    phrases: list[str]
    global_prompt: str
    notes: list[str] = field(default_factory=list)


def split_objects(prompt: str) -> tuple[list[str], str]:
    """(object phrases that name a shape, the background phrase or ""): the prompt's parts."""
    text = " ".join(str(prompt).lower().split())
    background = ""
    found = list(_BACKGROUND.finditer(text))
    m = found[-1] if found else None  # the last background phrase wins
    if m is not None:
        colour = m.group(1).strip()
        background = f"on a {colour} background".replace("  ", " ") if colour else "on a background"
        text = (text[:m.start()] + text[m.end():]).strip(" ,")
    parts = [p.strip(" ,.") for p in _SPLIT.split(text)]
    return [p for p in parts if p and shape_in_prompt(p)], background


def _position(phrase: str) -> tuple[str | None, str]:
    """(grid position named in the phrase or None, the phrase without those words)."""
    for words, pos in _POSITIONS:
        m = re.search(r"\b(?:in|on|at|along)?\s*(?:the\s+)?" + re.escape(words) + r"\b", phrase)
        if m:
            return pos, " ".join((phrase[:m.start()] + phrase[m.end():]).split()).strip(" ,:")
    return None, phrase


def layout_from_prompt(prompt: str, size: int = 32) -> PromptLayout | None:
    """The prompt laid out on a size × size canvas, or None when it names fewer than two objects."""
    phrases, background = split_objects(prompt)
    if len(phrases) < 2:
        return None
    notes = []
    if len(phrases) > MAX_OBJECTS:
        notes.append(f"{len(phrases)} objects named; the first {MAX_OBJECTS} are drawn (the world holds at most "
                     f"{MAX_OBJECTS})")
        phrases = phrases[:MAX_OBJECTS]
    placed = [_position(p) for p in phrases]
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size
    free = [k for k, (pos, _) in enumerate(placed) if pos is None]
    wanted = []  # each object's area before the ones placed earlier are taken out of it
    for k, (pos, _) in enumerate(placed):
        if pos is not None:  # its grid cell, grown to half the canvas
            col, row = _CELL[pos]
            wanted.append((np.abs(x - (col + 0.5) / 3) <= 0.25) & (np.abs(y - (row + 0.5) / 3) <= 0.25))
        else:  # side by side across the canvas, in the order named
            j, n = free.index(k), len(free)
            wanted.append((x >= j / n) & (x < (j + 1) / n) & (np.abs(y - 0.5) <= min(0.3, 0.5 / n + 0.05)))
    areas = np.zeros((len(phrases), size, size), bool)
    taken = np.zeros((size, size), bool)
    for k in sorted(range(len(placed)), key=lambda k: placed[k][0] is None):  # named positions first
        areas[k] = wanted[k] & ~taken
        if not areas[k].any():  # the same spot named twice, or every spot taken: share it
            areas[k] = wanted[k]
        taken |= areas[k]
    maps, planned = plan_objects(areas, [p for _, p in placed], model_size=size, clearance=CLEARANCE,
                                 strict=True)
    where = [f"'{p}' " + (scenes.POSITION_WORDS[pos][0][0] if pos else _side(free.index(k), len(free)))
             for k, (pos, p) in enumerate(placed)]
    notes.insert(0, "laid out before drawing (several objects named): " + "; ".join(where)
                 + (f"; global prompt '{background}'" if background else ""))
    return PromptLayout(areas, maps, [p for _, p in placed], background, notes + planned)


def _side(j: int, n: int) -> str:
    if n == 2:
        return ("on the left", "on the right")[j]
    if n == 3:
        return ("on the left", "in the middle", "on the right")[j]
    return "in the middle"


__all__ = ["PromptLayout", "layout_from_prompt", "split_objects"]
