"""Region maps as people paint them: the training sampler and the user-like evaluation protocol."""
import numpy as np
import pytest

from backends.shapes import painted


def _scene(seed=0, size=64):
    from backends.shapes import scenes

    b = scenes.make_batch(8, seed=seed, split="val", size=size)
    out = []
    for masks in b.masks:
        boxes = []
        for m in masks:
            ys, xs = np.nonzero(m)
            boxes.append((xs.min() / size, ys.min() / size, (xs.max() + 1) / size, (ys.max() + 1) / size))
        sil = masks.astype(np.float32).reshape(len(masks), 16, size // 16, 16, size // 16).mean((2, 4))
        out.append((np.asarray(boxes), sil, masks))
    return out


@pytest.mark.parametrize("kind", ["box", "ellipse", "blob", "dilated"])
def test_rough_regions_cover_the_object_and_are_larger_than_it(kind):
    """A painted area says where: it covers (nearly all of) the object and is bigger than its outline."""
    rng = np.random.default_rng(0)
    covered, ratio = [], []
    for boxes, sil, masks in _scene():
        for b, s, m in zip(boxes, sil, masks):
            r = painted.rough_region(b, kind, rng, size=32, silhouette=s)
            obj = m.reshape(32, 2, 32, 2).mean((1, 3)) >= 0.5
            if obj.sum() == 0:
                continue
            covered.append((r[obj] > 0).mean())
            ratio.append(r.sum() / obj.sum())
    assert np.mean(covered) > 0.97 and min(covered) > 0.85
    assert np.median(ratio) > 1.2  # larger than the silhouette: the outline does not give the shape away


def test_rough_region_kinds_differ_from_the_silhouette():
    """Across kinds the maps are not the object's silhouette (what the old training used)."""
    rng = np.random.default_rng(1)
    (boxes, sil, masks), = _scene(seed=3)[:1]
    sil32 = painted.upsample(sil[0], 32)
    ious = []
    for kind in ("box", "ellipse", "blob"):
        r = painted.rough_region(boxes[0], kind, rng, 32, sil[0])
        inter = ((r > 0) & (sil32 >= 0.5)).sum()
        ious.append(inter / ((r > 0) | (sil32 >= 0.5)).sum())
    assert max(ious) < 0.9
    with pytest.raises(ValueError, match="Unknown region kind"):
        painted.rough_region(boxes[0], "lasso", rng)
    with pytest.raises(ValueError, match="silhouette"):
        painted.rough_region(boxes[0], "dilated", rng)


def test_scene_regions_are_disjoint_and_keep_each_objects_pixels():
    rng = np.random.default_rng(2)
    for boxes, sil, _masks in _scene(seed=5):
        regs = painted.sample_rough_regions(boxes, sil, rng, 32, kind_p=(0, 0, 1, 0, 0))  # boxes overlap often
        assert regs.shape == (len(boxes), 32, 32)
        assert (regs.sum(0) <= 1).all()  # a painted canvas has one colour per pixel
        own = painted.upsample(sil, 32) >= 0.5
        single = own.sum(0) == 1  # (a pixel half one object, half another belongs to the one on top)
        for r in range(len(boxes)):
            assert (regs[r][own[r] & single] > 0).all()


def test_user_layouts_follow_the_protocol():
    """2-3 painted areas, each 10-60% of the canvas, disjoint; prompts drawn independently of the outline."""
    from backends.shapes.eval_generator import user_layouts

    lays = user_layouts(30, 32, seed=0)
    assert all((a[0] == b[0]).all() and a[1:] == b[1:] for a, b in zip(lays, user_layouts(30, 32, seed=0)))
    shapes = set()
    for masks, objs, bg, prompt in lays:
        assert 2 <= len(masks) <= 3 and len(objs) == len(masks)
        cover = masks.reshape(len(masks), -1).mean(1)
        assert ((cover >= 0.10) & (cover <= 0.60)).all()
        assert (masks.sum(0) <= 1).all()
        assert prompt == f"on a {bg} background"
        shapes |= {o[0] for o in objs}
    assert shapes == {"circle", "square", "triangle", "star", "cross"}


def test_painted_batch_swaps_captions_and_paints_every_object():
    """With a map and a background-only or empty prompt, every object gets its region (the words of
    the regions are then the only description); samples without a map are untouched."""
    from backends.shapes.train_generator import painted_batch

    rng = np.random.default_rng(0)
    B = 64
    batch = {"images": np.zeros((B, 32, 32, 3), np.uint8), "states": np.ones((B, 4, 8), np.float16),
             "tmask": np.ones((B, 4), bool), "rmasks": np.zeros((B, 3, 16, 16), np.float16),
             "rvalid": np.tile([True, True, False], (B, 1)),
             "bboxes": np.tile([[0.125, 0.125, 0.3125, 0.3125], [0.625, 0.625, 0.8125, 0.8125], [0, 0, 0, 0]],
                               (B, 1, 1)).astype(np.float32),
             "bgs": np.zeros(B, np.int8), "remb": np.zeros((B, 3, 8), np.float32)}
    batch["rmasks"][:, 0, 2:5, 2:5] = 1
    batch["rmasks"][:, 1, 10:13, 10:13] = 1
    bgp = {0: (np.full((2, 4, 8), 7, np.float16), np.ones((2, 4), bool))}
    out = painted_batch(batch, rng, p_map=0.5, p_rough=1.0, size=32, bg_prompts=bgp)
    used = out["use_map"]
    assert 10 < used.sum() < 54
    assert not out["keep"][~used].any() and (out["rmasks"][~used] == 0).all()
    swapped = used & (out["states"][:, 0, 0] == 7)
    assert swapped.any() and out["keep"][swapped][:, :2].all()
    assert (out["rmasks"][used][:, :2].reshape(-1, 2, 1024).sum(-1) >= 9 * 4).all()  # covers the 6x6-pixel object
    assert (out["states"][~used] == 1).all()


def test_inside_is_read_off_whole_objects():
    """An object drawn inside its painted area counts as inside; one spilling over it does not; the
    background is read outside the areas even when an area touches the border."""
    from backends.shapes import regions_eval as E

    img = np.full((32, 32, 3), 18, np.uint8)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 0:20, 0:14] = True  # touches the border
    masks[1, 4:22, 18:30] = True
    img[4:12, 3:10] = (225, 35, 35)  # inside area 0
    img[16:32, 20:26] = (35, 70, 225)  # spills below area 1
    comp = E.object_components(img, masks)
    assert E.inside_region(comp[0], masks[0]) and not E.inside_region(comp[1], masks[1])
    blank = np.full((32, 32, 3), 18, np.uint8)
    assert not E.inside_region(E.object_components(blank, masks)[0], masks[0])


def test_touching_objects_of_different_colours_are_two_objects():
    """Two objects in abutting areas that touch across the border: each is inside its own area (as one
    foreground component, the red one would have taken the blue one and neither would count)."""
    from backends.shapes import regions_eval as E

    img = np.full((32, 32, 3), 18, np.uint8)
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 4:28, 2:16] = True
    masks[1, 4:28, 16:30] = True
    img[10:20, 6:16] = (225, 35, 35)  # red, up to the border
    img[12:22, 16:26] = (35, 70, 225)  # blue, from the border on: the two touch
    comp = E.object_components(img, masks)
    assert E.inside_region(comp[0], masks[0]) and E.inside_region(comp[1], masks[1])
    merged = E.assign_components(np.linalg.norm(img.astype(float) - 18, axis=-1) > 60, masks)
    assert not merged[1].any()  # without colours, the blue object went to the red one's area


def test_contact_sheet_marks_what_the_judge_read_otherwise():
    from backends.shapes.contact_sheet import render_sheet

    prompts = [f"a {c} circle" for c in ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")]
    imgs = np.zeros((8, 2, 8, 8, 3), np.uint8)
    judged = np.asarray([["circle red", "circle red"]] + [["star blue", "circle " + p.split()[1]] for p in prompts[1:]],
                        object)
    sheet = np.asarray(render_sheet(prompts, imgs, judged, scale=2, title="t"))
    assert sheet.shape[1] >= 8 * 2 * 8 * 2
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 40) & (sheet[..., 2] < 80)
    assert red.sum() > 7 * 4 * 2 * 8  # seven frames (one per wrong sample), none around the right ones
