"""The Shapes world's object planner for painted regions: each painted area whose prompt names a
shape becomes that shape's silhouette, fitted inside the area and clear of the other areas; the
Regions service uses it by default and can be told not to."""
import numpy as np
import pytest

from backends.shapes import region_planner as P


def _rect(size, y0, y1, x0, x1):
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("prompt, shape", [("a crimson five-pointed star", "star"), ("two red boxes", "square"),
                                           ("a blue plus sign", "cross"), ("a tiny green disk", "circle"),
                                           ("a wedge", "triangle"), ("a boxing ring", None), ("", None)])
def test_the_shape_a_prompt_names(prompt, shape):
    assert P.shape_in_prompt(prompt) == shape


def test_an_area_becomes_the_prompted_shape_inside_it_and_in_its_middle():
    area = _rect(32, 4, 16, 2, 30)  # a wide painted rectangle
    maps, notes = P.plan_objects(area[None], ["a red triangle"])
    sil = maps[0] > 0.5
    assert sil.sum() >= 30 and (sil & area).sum() >= P.MIN_INSIDE * sil.sum()
    assert sil.sum() < 0.5 * area.sum()  # an object in the area, not the area filled
    ys, xs = np.nonzero(sil)
    assert abs(xs.mean() - 15.5) <= 2  # in the middle of the long side, not at one end
    rows = sil.sum(1)[sil.any(1)]
    assert rows[-1] > 2 * rows[0]  # a triangle: narrow at the top, wide at the bottom
    assert "a triangle" in notes[0]


def test_objects_in_abutting_areas_do_not_touch():
    left, right = _rect(32, 4, 28, 0, 16), _rect(32, 4, 28, 16, 32)
    maps, _ = P.plan_objects(np.stack([left, right]), ["a red square", "a blue circle"])
    from scipy import ndimage

    a, b = maps[0] > 0.05, maps[1] > 0.05
    assert a.any() and b.any() and not (ndimage.binary_dilation(a) & b).any()


def test_an_area_whose_prompt_names_no_shape_is_kept_as_painted():
    area = _rect(32, 8, 24, 8, 24)
    maps, notes = P.plan_objects(area[None], ["something red"])
    np.testing.assert_array_equal(maps[0], area.astype(np.float32))
    assert "no shape named in 'something red'" in notes[-1]
    with pytest.raises(ValueError, match="one prompt per area"):
        P.plan_objects(area[None], ["a", "b"])
    speck = np.zeros((1, 32, 32), np.float32)
    speck[0, 5, 5] = 0.3  # under half a pixel at the model's size
    maps, notes = P.plan_objects(speck, ["a red star"])
    np.testing.assert_array_equal(maps, speck)
    assert "too small to hold an object" in notes[0]


def test_the_planner_is_reached_through_the_registry_and_feeds_every_method():
    """Generic code finds the Shapes planner by name; regions.generate hands the planned maps to
    the method (a tiny random pipeline here) and says what was planned."""
    from backends import plugins
    from backends.generative import regions as R

    assert plugins.get_region_planner("shapes") is not None and plugins.get_region_planner("nope") is None
    pipe = R.tiny_random_pipeline(0, spatext_channels=4, image_size=32)
    area = _rect(32, 2, 30, 2, 30).astype(np.float32)
    spec = R.RegionSpec(area[None], ["a red star"], ["red"])
    seen = []
    planner = plugins.get_region_planner("shapes")

    def spy(masks, prompts, **kw):
        out = planner(masks, prompts, **kw)
        seen.append(out[0])
        return out

    res = R.generate(pipe, spec, "", method="compare", seed=0, num_inference_steps=2, planner=spy)
    assert len(seen) == 1 and (seen[0] > 0.5).sum() < 0.6 * area.sum()
    assert any("object planner" in n and "a star" in n for n in res.notes)
    assert set(res.images) >= {"multidiffusion", "paint_with_words"}
    plain = R.generate(pipe, spec, "", method="multidiffusion", seed=0, num_inference_steps=2)
    assert not any("object planner" in n for n in plain.notes)


def test_the_regions_service_plans_by_default_and_can_be_told_not_to(monkeypatch):
    from app.services.regions import EXAMPLE, RegionsService, example_canvas
    from backends.errors import InputError
    from backends.generative import regions as R
    from backends.registry import Backends

    svc = RegionsService(Backends())
    assert svc.planner() is not None  # the Shapes world has one
    pipe = R.tiny_random_pipeline(0, spatext_channels=4, image_size=32)
    monkeypatch.setattr(svc, "pipeline", lambda model=None: pipe)
    prompts = {colour: prompt for colour, _, prompt in EXAMPLE["regions"]}
    res, _ = svc.generate(example_canvas(), prompts, "", method="multidiffusion", steps=2)
    assert any("object planner" in n and "a circle" in n and "a star" in n for n in res.notes)
    # the preview shows the planned objects in full colour inside their pale areas
    red, blue = np.asarray(R.PALETTE["red"]), np.asarray(R.PALETTE["blue"])
    px = res.plan.reshape(-1, 3).astype(int)
    full_red, full_blue = (px == red).all(1).sum(), (px == blue).all(1).sum()
    pale = ((px != red).any(1) & (px != blue).any(1) & (px != 236).any(1)).sum()
    assert full_red > 0 and full_blue > 0 and pale > 0
    res, _ = svc.generate(example_canvas(), prompts, "", method="multidiffusion", steps=2, plan_objects=False)
    assert not any("object planner" in n for n in res.notes) and res.plan is None
    with pytest.raises(InputError, match="plan_objects must be true or false"):
        svc.generate(example_canvas(), prompts, "", method="multidiffusion", steps=2, plan_objects="yes")
