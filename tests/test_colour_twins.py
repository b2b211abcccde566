"""Colour twins of one-object scenes and the h-swap loss (backends/shapes/colour_twins.py)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backends.shapes import scenes
from backends.shapes.colour_twins import colour_twins, object_colour, recolour_caption, recolour_image


def test_captions_name_their_colour_and_twins_swap_the_word_in_place():
    assert object_colour("there is a mid-sized lemon wedge in the top-right corner") == "yellow"
    assert object_colour("a tiny royal blue quadrilateral, off-white background") == "blue"
    assert object_colour("a hot pink box") == "pink" and object_colour("a grass-green star") == "green"
    assert object_colour("a grey square on a black background") is None  # background words are not colours
    assert object_colour("a red circle and a blue square") is None  # two colours: not a one-object twin
    assert recolour_caption("a tiny royal blue quadrilateral", "red") == "a tiny scarlet quadrilateral"
    assert recolour_caption("large blue disc, mid-grey background", "pink") == "large pink disc, mid-grey background"


def test_a_twin_is_the_same_render_in_the_new_colour():
    """Coverage-weighted renders: recolouring a red scene blue gives the blue scene's render (±2 levels)."""
    b = scenes.make_batch(6, seed=3, split="train", size=32, single=True)
    bgs = np.array([list(scenes.BACKGROUNDS).index(s.background) for s in b.specs])
    for k, spec in enumerate(b.specs):
        o = spec.objects[0]
        new = "blue" if o.colour != "blue" else "red"
        want, _ = scenes.render(replace(spec, objects=[replace(o, colour=new)]), size=32)
        got = recolour_image(b.images[k], int(bgs[k]), o.colour, new)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2
    rng = np.random.default_rng(0)
    twins, caps, ok = colour_twins(b.images, b.captions, bgs, rng)
    assert ok.all()
    for k in range(len(caps)):
        old, new = object_colour(b.captions[k]), object_colour(caps[k])
        assert new is not None and new != old
        assert not np.array_equal(twins[k], b.images[k])


def test_the_swap_loss_asks_each_row_for_its_twins_image():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    torch.set_num_threads(1)
    from backends.shapes import generator as G
    from backends.shapes.colour_twins import swap_h_loss
    from test_generator import tiny_config

    gen = G.build_generator(tiny_config(pooled_conditioning=False), seed=0)
    alphas = torch.from_numpy(np.asarray(gen.make_scheduler().alphas_cumprod, np.float32))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    states = rng.standard_normal((2, 6, 384)).astype(np.float16)
    mask = np.ones((2, 6), bool)
    loss, info = swap_h_loss(gen, alphas, a, b, states, mask, states, mask, rng)
    loss.backward()
    assert torch.isfinite(loss) and info["mse_swap"] > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in gen.unet.up_blocks.parameters())
    # the swap hook is gone after the call: in a plain pass each row keeps its own h
    x = torch.randn(4, gen.config.latent_channels + gen.config.spatext_channels, 16, 16)
    c = torch.from_numpy(np.concatenate([states, states])).float()
    c[2:] += 1.0
    with torch.no_grad():
        pair = gen.unet(x, torch.tensor([10] * 4), c).sample
        alone = gen.unet(x[:1], torch.tensor([10]), c[:1]).sample
    assert torch.allclose(pair[:1], alone, atol=1e-5)
