"""Several objects from one prompt (backends/shapes/prompt_layout.py): the prompt is split into its
objects and its background, each object gets its own area (its position words, or side by side),
and the Generate service draws them through the region map; one object stays a text prompt."""
import numpy as np
import pytest
from scipy import ndimage

from backends.shapes import prompt_layout as L


@pytest.mark.parametrize("prompt, objects, background", [
    ("a red circle and a blue square on a black background", ["a red circle", "a blue square"], "on a black background"),
    ("crimson disc, blue box, green wedge", ["crimson disc", "blue box", "green wedge"], ""),
    ("a red circle next to a yellow triangle against a dark backdrop", ["a red circle", "a yellow triangle"],
     "on a dark background"),
    ("a big red star", ["a big red star"], ""),
    ("a picture of nothing much", [], ""),
])
def test_a_prompt_is_split_into_objects_and_background(prompt, objects, background):
    assert L.split_objects(prompt) == (objects, background)


def test_one_object_is_not_laid_out():
    assert L.layout_from_prompt("a large red circle in the center on a white background") is None


def test_named_positions_are_kept_and_objects_do_not_touch():
    lay = L.layout_from_prompt("a small red circle in the top left and a blue star in the bottom right "
                               "on a white background", 32)
    assert lay.phrases == ["a small red circle", "a blue star"] and lay.global_prompt == "on a white background"
    (y0, x0), (y1, x1) = [np.argwhere(m > 0.5).mean(0) for m in lay.maps]
    assert x0 < 12 and y0 < 12 and x1 > 20 and y1 > 20
    assert (lay.maps[0] > 0.5).sum() < (lay.maps[1] > 0.5).sum()  # "small" caps the circle's size
    assert not (ndimage.binary_dilation(lay.maps[0] > 0.05, iterations=2) & (lay.maps[1] > 0.05)).any()
    assert "in the top left" in lay.notes[0] and "in the bottom right" in lay.notes[0]


def test_objects_without_positions_go_side_by_side_in_the_order_named():
    lay = L.layout_from_prompt("a red circle, a blue square and a green cross", 32)
    xs = [np.argwhere(m > 0.5).mean(0)[1] for m in lay.maps]
    assert xs == sorted(xs) and xs[0] < 11 and xs[2] > 21
    for a in range(3):
        for b in range(a + 1, 3):
            assert not (ndimage.binary_dilation(lay.maps[a] > 0.05) & (lay.maps[b] > 0.05)).any()
    same = L.layout_from_prompt("a red circle on the left and a blue square on the left", 32)
    assert all((m > 0.5).sum() > 10 for m in same.maps)  # one spot named twice: both objects still drawn
    many = L.layout_from_prompt("a red circle and a blue square and a green star and a pink cross", 32)
    assert len(many.phrases) == 3 and any("the first 3 are drawn" in n for n in many.notes)


def test_generate_lays_out_several_objects_and_can_be_told_not_to():
    from app.services.generate import GenerateService
    from backends.errors import InputError
    from backends.registry import Backends
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("no Shapes generator weights in assets/ yet")
    svc = GenerateService(Backends())
    prompt = "a red circle and a blue square on a black background"
    img, notes = svc.generate(prompt, steps=4)
    assert img.shape[2] == 3 and any("laid out" in n and "'a red circle' on the left" in n for n in notes)
    plain, notes2 = svc.generate(prompt, steps=4, layout=False)
    assert not any("laid out" in n for n in notes2) and not np.array_equal(img, plain)
    _, notes_auto = svc.generate(prompt, steps=4, method="autoguidance")  # what the tab's radio sends
    assert any("used classifier-free guidance" in n for n in notes_auto)
    _, notes3 = svc.generate("a red circle", steps=4)
    assert not any("laid out" in n for n in notes3)
    with pytest.raises(InputError, match="layout must be true or false"):
        svc.generate(prompt, steps=4, layout="no")


def test_the_two_object_report_asks_for_two_different_shapes_and_scores_both():
    from backends.shapes.generator import WEIGHTS
    from backends.shapes.two_objects_eval import run, two_object_prompts

    prompts, asked = two_object_prompts(20, seed=3)
    assert prompts == two_object_prompts(20, seed=3)[0] and len(set(prompts)) > 15
    assert all(a["shape"] != a["shape2"] and f"a {a['colour']} {a['shape']} and" in p for p, a in zip(prompts, asked))
    if not WEIGHTS.exists():
        pytest.skip("no Shapes generator weights in assets/ yet")
    res = run(2, seed=0)
    assert set(res) == {"text", "layout"} and all(0 <= r["both_right"] <= 1 and r["n"] == 2 for r in res.values())
    assert 0 <= res["layout"]["geometric_shapes_right"] <= 1


def test_area_shapes_reads_each_laid_out_object_on_its_own():
    """The geometric check of the two-object report: each layout area read alone, the other object
    painted over with the background, so a rendered "circle and square" reads as exactly those two."""
    from backends.shapes import scenes
    from backends.shapes.prompt_layout import layout_from_prompt
    from backends.shapes.two_objects_eval import area_shapes

    lay = layout_from_prompt("a red circle and a blue square", 32)
    centres = [np.argwhere(np.asarray(m) > 0.5).mean(0) / 32 for m in lay.maps]  # (row, col) of each area
    objs = [scenes.ObjectSpec(shape, colour, "small", float(c[1]), float(c[0]))
            for (shape, colour), c in zip([("circle", "red"), ("square", "blue")], centres)]
    image = scenes.render(scenes.SceneSpec(objs, "black"), 32)[0]
    assert area_shapes(image, lay.maps) == ["circle", "square"]
    assert sorted(area_shapes(image, lay.maps[::-1])) == ["circle", "square"]
