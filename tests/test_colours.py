"""Category colours: named colours drawn as themselves, the rest stable across maps."""
import json

import numpy as np

from app.components.colours import OTHER, PALETTE, category_colours, named_colour
from app.components.scatter import scatter_payload


def test_colour_names_are_drawn_in_their_own_colour():
    cats = ["blue", "cyan", "orange", "pink", "red", "yellow"]
    cols = category_colours(cats)
    assert [named_colour(c) for c in cats] == cols
    assert cols[cats.index("red")].startswith("#e0") and cols[cats.index("blue")] == "#2346e1"
    assert category_colours(["Dark Grey", "#00FF00", "(other)"]) == ["#464646", "#00ff00", OTHER]


def test_other_categories_keep_their_colour_whatever_else_is_on_the_map():
    a = dict(zip(["circle", "square", "star"], category_colours(["circle", "square", "star"])))
    b = dict(zip(["triangle", "star", "cross", "circle"], category_colours(["triangle", "star", "cross", "circle"])))
    assert a["circle"] == b["circle"] and a["star"] == b["star"]
    assert set(a.values()) <= set(PALETTE[:10])  # few categories: the ten most distinct colours
    digits = category_colours([str(i) for i in range(10)])
    assert sorted(digits) == sorted(PALETTE[:10])  # ten digits, ten distinct colours
    many = [str(i) for i in range(30)]
    assert len(set(category_colours(many))) == 30  # no two categories of one map share a colour


def test_payload_carries_one_colour_per_category_and_an_outline_for_named_colours():
    p = json.loads(scatter_payload(np.zeros((4, 2)), ids=list("abcd"), color=["red", "white", "red", "blue"]))
    assert p["categories"] == ["blue", "red", "white"]
    assert p["colors"] == [named_colour("blue"), named_colour("red"), named_colour("white")]
    assert p["outline"] is True  # white points stay visible on the light plot background
    q = json.loads(scatter_payload(np.zeros((3, 2)), ids=list("abc"), color=["0", "1", "1"]))
    assert q["outline"] is False and len(q["colors"]) == 2
