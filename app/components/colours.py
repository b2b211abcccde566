"""Colours for categories, the same in every map of the app.

- A column whose values are all colour names (CSS names such as "red", "dark grey") or hex codes
  is drawn in those colours: "red" points are red.
- Other categories get a colour from one fixed palette by a hash of the category's text, so a
  category keeps its colour across the Atlas, Clusters and Stitching maps and across reloads (for
  maps with the same number of categories, up to 10, 20 or 40: few categories use only the most
  distinct colours); within one map two categories never share a colour while the palette has
  free slots.
"""
from __future__ import annotations

import hashlib
import re

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#ad494a", "#637939", "#7b4173", "#3182bd",
    "#31a354", "#756bb1", "#636363", "#e6550d", "#843c39", "#5254a3", "#8ca252", "#bd9e39",
    "#d6616b", "#ce6dbd", "#6b6ecf", "#9c9ede", "#cedb9c", "#e7969c", "#de9ed6", "#3182bd",
    "#fd8d3c", "#74c476", "#9e9ac8", "#969696", "#c6dbef", "#fdd0a2", "#c7e9c0", "#dadaeb",
)
OTHER = "#b0b0b0"  # "(other)" and missing values

# CSS named colours (the common ones; the rest of CSS's list would hardly appear as data values).
NAMED = {
    "black": "#000000", "white": "#ffffff", "red": "#e02020", "green": "#23a037", "blue": "#2346e1",
    "yellow": "#f0e128", "orange": "#f58c14", "purple": "#8c2dcd", "pink": "#fa78c3", "cyan": "#28d2e1",
    "magenta": "#ff00ff", "brown": "#8b4513", "grey": "#808080", "gray": "#808080",
    "dark grey": "#464646", "dark gray": "#464646", "darkgrey": "#464646", "darkgray": "#464646",
    "light grey": "#d3d3d3", "light gray": "#d3d3d3", "lightgrey": "#d3d3d3", "lightgray": "#d3d3d3",
    "silver": "#c0c0c0", "maroon": "#800000", "olive": "#808000", "lime": "#00ff00", "teal": "#008080",
    "navy": "#000080", "aqua": "#00ffff", "fuchsia": "#ff00ff", "violet": "#ee82ee", "indigo": "#4b0082",
    "gold": "#ffd700", "beige": "#f5f5dc", "tan": "#d2b48c", "coral": "#ff7f50", "salmon": "#fa8072",
    "crimson": "#dc143c", "turquoise": "#40e0d0", "khaki": "#f0e68c", "lavender": "#e6e6fa", "plum": "#dda0dd",
    "orchid": "#da70d6", "chocolate": "#d2691e", "tomato": "#ff6347", "skyblue": "#87ceeb", "sky blue": "#87ceeb",
    "dark green": "#006400", "darkgreen": "#006400", "dark blue": "#00008b", "darkblue": "#00008b",
    "dark red": "#8b0000", "darkred": "#8b0000", "light blue": "#add8e6", "lightblue": "#add8e6",
    "light green": "#90ee90", "lightgreen": "#90ee90",
}
_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}){1,2}$")


def named_colour(value) -> str | None:
    """The hex colour a value names ("Red", "dark grey", "#abc"), or None."""
    s = str(value).strip()
    if _HEX.match(s):
        return s.lower()
    return NAMED.get(s.lower())


def _slot(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:4], "little") % len(PALETTE)


def category_colours(categories) -> list[str]:
    """One colour per category (same order). Named colours when every category names one (missing
    values and "(other)" aside); else the palette by hash, a taken slot moving to the next free one."""
    cats = [str(c) for c in categories]
    special = {"(other)", "", "nan", "None", "(missing)"}
    named = [named_colour(c) for c in cats]
    if any(c not in special for c in cats) and all(n is not None or c in special for c, n in zip(cats, named)):
        return [n if n is not None else OTHER for n in named]
    used: set[int] = set()
    assigned: dict[str, str] = {}
    n = len({c for c in cats if c not in special})
    slots = 10 if n <= 10 else 20 if n <= 20 else len(PALETTE)  # few categories: the most distinct colours
    for c in sorted(set(cats)):
        if c in special:
            assigned[c] = OTHER
            continue
        s = _slot(c) % slots
        if len(used) < slots:
            while s in used:
                s = (s + 1) % slots
        used.add(s)
        assigned[c] = PALETTE[s]
    return [assigned[c] for c in cats]


__all__ = ["PALETTE", "NAMED", "OTHER", "named_colour", "category_colours"]
