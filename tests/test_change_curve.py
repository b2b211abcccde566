"""The Directions strip's default range, read off the image's change curve (issue #17 item 3): the
visible-change measure, the Shapes check for broken frames, the range rule, the service and the
API; and the quality bar on the shipped generator (its strips change clearly and do not break)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backends.generative.change_curve import CLEAR_CHANGE, H_GRID, TEXT_GRID, choose_range, visible_change
from backends.shapes import scenes
from backends.shapes.edit_checks import broken_frames, count_objects


def _scene(*objects, background="grey", size=32):
    return scenes.render(scenes.SceneSpec(list(objects), background), size)[0]


CIRCLE = scenes.ObjectSpec("circle", "red", "medium", 0.5, 0.5)


# -- visible change ---------------------------------------------------------------------------

def test_a_small_object_recoloured_or_moved_is_a_full_change_and_a_wobble_is_not():
    small = dataclasses.replace(CIRCLE, size="small")
    src = _scene(small)
    recoloured = _scene(dataclasses.replace(small, colour="blue"))
    moved = _scene(dataclasses.replace(small, x=0.2, y=0.2))
    nudged = _scene(dataclasses.replace(small, x=0.52))  # its outline moves by a pixel or so
    ch = visible_change(np.stack([src, recoloured, moved, nudged]), src)
    assert ch[0] == 0 and ch[1] == 1.0 and ch[2] == 1.0
    assert ch[3] < CLEAR_CHANGE, ch
    # an RMS distance would call the recolouring small: the object covers a few percent of the image
    rms = np.sqrt((((recoloured.astype(float) - src) / 255) ** 2).mean())
    assert rms < 0.15


def test_a_background_flip_is_a_clear_change():
    src = _scene(CIRCLE, background="white")
    assert visible_change(_scene(CIRCLE, background="black")[None], src)[0] == 1.0


# -- broken frames ----------------------------------------------------------------------------

def test_counting_objects_tells_touching_blobs_of_two_colours_apart():
    assert count_objects(_scene(background="black")) == 0
    assert count_objects(_scene(CIRCLE)) == 1
    two = _scene(CIRCLE, scenes.ObjectSpec("square", "blue", "small", 0.15, 0.15))
    assert count_objects(two) == 2
    touching = _scene(dataclasses.replace(CIRCLE, x=0.42), scenes.ObjectSpec("circle", "yellow", "medium", 0.62, 0.5))
    assert count_objects(touching) == 2


def test_a_split_object_or_a_smeared_background_is_broken_and_a_change_of_factors_is_not():
    src = _scene(CIRCLE)
    ok = [_scene(dataclasses.replace(CIRCLE, colour="green")), _scene(dataclasses.replace(CIRCLE, shape="star")),
          _scene(dataclasses.replace(CIRCLE, size="large", x=0.3)), _scene(CIRCLE, background="white")]
    split = _scene(dataclasses.replace(CIRCLE, size="small", x=0.3), scenes.ObjectSpec("circle", "red", "small", 0.7, 0.7))
    smeared = src.copy()
    smeared[:, :4] = scenes.COLOURS["cyan"]  # colour bleeding over the left border
    smeared[:, -4:] = scenes.COLOURS["pink"]
    assert broken_frames(src, np.stack(ok)).tolist() == [False] * 4
    assert broken_frames(src, np.stack([split, smeared])).tolist() == [True, True]


# -- the range rule ---------------------------------------------------------------------------

def test_range_is_the_first_clear_change_below_the_first_break():
    s = np.array(H_GRID)
    change = np.array([0.0, 0.1, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0])
    none = np.zeros(len(s), bool)
    assert choose_range(s, change, none)[0] == 2.0  # the first ≥ CLEAR_CHANGE
    brk = none.copy()
    brk[2] = True  # breaks at 1.5, before any clear change: stay just below the break
    r, why = choose_range(s, change, brk)
    assert r == 1.0 and "breaks at ±1.5" in why
    brk[:] = False
    brk[0] = True
    assert choose_range(s, change, brk)[0] == 0.5  # broken at once: the smallest strength tried
    r, why = choose_range(s, np.full(len(s), 0.05), none)
    assert r == 10.0 and "little change" in why


# -- the quality bar on the shipped Shapes generator ------------------------------------------------

def test_shipped_generator_strips_change_clearly_and_do_not_break():
    """Top 10 PCA directions and colour → blue (the tab's halves, conditional / conditional), 6 sources:
    the strip at its read-off range changes the image clearly at its ends and shows no broken frame."""
    from backends.shapes.generator import WEIGHTS
    from backends.shapes.judge import WEIGHTS as JUDGE

    if not WEIGHTS.exists() or not JUDGE.exists():
        pytest.skip("the trained Shapes generator and judge are not in assets/")
    import torch

    from backends.generative import directions as D
    from backends.generative import hspace
    from backends.generative.change_curve import change_curve
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    torch.set_num_threads(1)
    pipe, judge = load_shapes_pipeline(), load_judge()
    prompts, factors = D.shapes_prompts(120, seed=0)
    bank = D.sample_bank(pipe, prompts, seeds=0, steps=10, factors=factors, batch=60, record_half="cond")
    bank.judged = judge.predict(bank.images)
    dirs = D.pca_directions(bank, k=10) + [D.factor_direction(bank, "colour", "blue", labels="judge")]
    sp, _ = D.shapes_prompts(6, seed=7)
    src = hspace.generate(pipe, sp, seeds=1000, steps=10, record_half="cond")
    clear = whole = n = 0
    for d in dirs:
        for r in range(src.batch):
            one = D._row(src, r)
            c = change_curve(pipe, one, d, broken=broken_frames, delta_half="cond")
            _, frames = D.traversal(pipe, one, d, strength=c.range, frames=11, delta_half="cond")
            clear += visible_change(frames[[0, -1]], one.images[0]).max() >= CLEAR_CHANGE
            whole += not broken_frames(one.images[0], frames).any()
            n += 1
    print(f"strips at the read-off range: clear change at an end {clear}/{n}, no broken frame {whole}/{n}")
    assert clear >= 0.75 * n and whole >= 0.9 * n


def test_large_models_try_fewer_strengths():
    """A change curve costs two frames per strength: Shapes (32 px) tries 9 strengths, a model with
    512-pixel images (Stable Diffusion, each frame a full denoising pass) 4, for either kind of direction."""
    from backends.generative.change_curve import H_GRID_SHORT, TEXT_GRID, TEXT_GRID_SHORT, default_grid

    assert default_grid(False, 32) == H_GRID and default_grid(True, 32) == TEXT_GRID
    assert default_grid(False, 512) == H_GRID_SHORT and default_grid(True, 512) == TEXT_GRID_SHORT
    assert len(H_GRID_SHORT) == 4 and max(H_GRID_SHORT) <= max(H_GRID)


def test_a_text_directions_curve_looks_at_the_side_its_strip_shows():
    """A text direction's strip runs from 0 to +s, so its curve renders +s only (one frame a strength)."""
    from backends.generative import directions as D
    from backends.generative import hspace
    from backends.generative.change_curve import change_curve
    from test_hspace import tiny_pipe

    pipe = tiny_pipe(image_size=32)
    src = hspace.generate(pipe, "a red circle", seeds=0, steps=3)
    c = change_curve(pipe, src, D.text_direction(pipe, "a red circle", "a blue circle"), keep_images=True)
    assert len(c.images) == len(TEXT_GRID) == len(c.change) and c.range in TEXT_GRID
