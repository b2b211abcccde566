"""Small model outputs are shown enlarged (nearest neighbour) in the UI; the API keeps their size."""
import numpy as np
import pytest

from app.components.display import enlarge


def test_enlarge_repeats_pixels_by_an_integer_factor():
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    big = enlarge(img)
    assert big.shape == (256, 256, 3) and big.dtype == np.uint8
    assert (big[::8, ::8] == img).all() and (big[7::8, 7::8] == img).all()  # each pixel a crisp 8x8 square
    assert enlarge(np.zeros((8, 8), np.uint8), 160).shape == (160, 160)
    assert enlarge(np.zeros((30, 20, 3), np.uint8), 100).shape == (120, 80, 3)  # ceil(100 / 30) = 4
    large = np.zeros((512, 512, 3), np.uint8)
    assert enlarge(large) is large  # already large: unchanged


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")))
    return create_app(settings, Backends(settings))


def _fn(demo, name):
    return [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name][0].fn


def test_generate_tab_shows_the_shapes_image_enlarged_and_the_api_returns_its_own_size(demo):
    from PIL import Image

    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    shown, notes = _fn(demo, "run")("a red circle", "", 0, 4, 3.5, "")
    assert shown.shape == (256, 256, 3) and "shown enlarged" in notes
    api_file, _ = [f for f in demo.fns.values() if f.api_name == "generate"][0].fn("a red circle", "", 0, 4, 3.5, "")
    with Image.open(api_file.path) as im:
        assert im.size == (32, 32)


def test_atlas_item_and_neighbours_of_8x8_digits_are_enlarged(demo):
    """A click on the map (what the browser sends) shows the 8x8 digit and its neighbours enlarged."""
    import types

    opened = _fn(demo, "open_corpus")("digits", "pca", 15, 0.1, "cosine", progress=lambda *a, **k: None)
    click = types.SimpleNamespace(_data={"index": 0})
    _, _, image, _, gallery, _, item_id = _fn(demo, "on_point_click")(opened[0], 5, "label", click)
    assert image.shape[:2] == (160, 160) and item_id
    assert len(gallery) == 5 and all(g[0].shape[:2] == (96, 96) for g in gallery)


def test_directions_source_and_edit_are_shown_enlarged(demo):
    from backends.generative.hspace import DEFAULT_LAYER
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    state, src, edited, *_ = _fn(demo, "ui_prompt")("a red circle", 0, 4, 1.0, 3.5, DEFAULT_LAYER)
    assert src.shape == edited.shape == (256, 256, 3)
    assert _fn(demo, "ui_edit")(state, 0.0, 1.0, False, "both", "", "", "", "", 0, 0, 0, 0).shape == (256, 256, 3)


def test_galleries_show_whole_images(demo):
    """With fewer images than columns a gallery widens them to fill its width (fit_columns), and at a
    fixed height the squares were cut off: the bottom of the Regions result, the clusters' typical
    items. Every gallery fits whole images, and either keeps its columns or grows with them."""
    import gradio as gr

    galleries = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert len(galleries) >= 6
    bad = [g.label for g in galleries if g.object_fit != "contain" or (g.fit_columns and g.height != "auto")]
    assert not bad, bad
