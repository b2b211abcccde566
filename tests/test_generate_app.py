"""The Generate panel through its API: images from the Shapes generator; bad input gets a message."""
import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from backends.shapes.generator import WEIGHTS

pytestmark = pytest.mark.skipif(not WEIGHTS.exists(), reason="no Shapes generator weights in assets/ yet")


@pytest.fixture(scope="module")
def client(atlas_app):
    return Client(atlas_app[0], verbose=False)


def test_generate_returns_an_image_and_is_deterministic_per_seed(client):
    img1, notes = client.predict("a large red circle in the center", "", 3, 4, 4.0, api_name="/generate")
    img2, _ = client.predict("a large red circle in the center", "", 3, 4, 4.0, api_name="/generate")
    img3, _ = client.predict("a large red circle in the center", "", 4, 4, 4.0, api_name="/generate")
    a, b, c = (np.asarray(Image.open(p)) for p in (img1, img2, img3))
    assert a.shape[-1] == 3 and a.shape[0] == a.shape[1] >= 32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert "DDIM steps" in notes


def test_out_of_range_numbers_are_clamped_and_reported(client):
    _, notes = client.predict("a blue star", "", 1, 500, 99.0, api_name="/generate")
    assert "steps 500" in notes and "used 100" in notes
    assert "guidance 99" in notes and "used 20" in notes


@pytest.mark.parametrize("prompt,message", [("", "prompt is empty"), ("x" * 10_001, "at most 10,000")])
def test_bad_prompts_get_a_message(client, prompt, message):
    with pytest.raises(Exception, match=message):
        client.predict(prompt, "", 0, 4, 4.0, api_name="/generate")


def test_unknown_words_and_non_ascii_still_generate(client):
    img, _ = client.predict("a zorblax ✨ 形 in the corner", "", 0, 2, 4.0, api_name="/generate")
    assert np.asarray(Image.open(img)).ndim == 3


def test_guidance_method_default_choice_and_bad_name(client):
    args = ("a small blue square", "", 5, 3, 3.5)
    default, notes = client.predict(*args, api_name="/generate")
    auto, auto_notes = client.predict(*args, "autoguidance", api_name="/generate")
    cfg, cfg_notes = client.predict(*args, "classifier-free", api_name="/generate")
    a, b, c = (np.asarray(Image.open(p)) for p in (default, auto, cfg))
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # the Shapes model defaults to autoguidance
    assert "autoguidance guidance 3.5" in notes and "classifier-free guidance 3.5" in cfg_notes
    # a negative prompt needs classifier-free guidance: the default gives way (reported), "auto" is refused
    _, neg_notes = client.predict("a small blue square", "a circle", 5, 3, 3.5, api_name="/generate")
    assert "classifier-free guidance used" in neg_notes
    with pytest.raises(Exception, match="negative_prompt"):
        client.predict("a small blue square", "a circle", 5, 3, 3.5, "autoguidance", api_name="/generate")
    with pytest.raises(Exception, match="guidance method must be one of"):
        client.predict(*args, "best", api_name="/generate")


def test_omitted_steps_and_guidance_are_the_models_defaults(client):
    from backends.shapes.generator import WEIGHTS, shipped_config

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    c = shipped_config()
    _, notes = client.predict("a blue star", api_name="/generate")
    assert f"{c.num_inference_steps} DDIM steps" in notes and f"guidance {c.guidance_scale:g}" in notes


def test_a_repeated_request_comes_from_the_cache(tmp_path):
    from app.services.generate import GenerateService
    from backends.registry import Backends
    from backends.settings import Settings
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    svc = GenerateService(Backends(Settings.from_env(cache_dir=str(tmp_path / "cache"))))
    a, notes_a = svc.generate("a blue star", "", 3, 4, 3.5, "")
    b, notes_b = svc.generate("a blue star", "", 3.0, 4.0, 3.5, "")  # the same request, numbers as floats
    c, notes_c = svc.generate("a blue star", "", 4, 4, 3.5, "")
    assert np.array_equal(a, b) and "from the cache" in notes_b[-1] and "from the cache" not in notes_a[-1]
    assert not np.array_equal(a, c) and "from the cache" not in notes_c[-1]
    b[:] = 0  # callers get copies: the cached image stays as it was
    assert np.array_equal(svc.generate("a blue star", "", 3, 4, 3.5, "")[0], a)


def test_opening_the_tab_shows_an_image(tmp_path):
    import gradio as gr

    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    demo = create_app(settings, Backends(settings))
    (f,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "first_look"]
    assert [t[1] for t in f.targets] == ["select"]
    shown, notes = f.fn(None, "a large red circle in the center", "", 0, 4, 3.5, "autoguidance", True)
    assert shown.shape == (256, 256, 3) and "DDIM steps" in notes
    assert f.fn(shown, "a large red circle in the center", "", 0, 4, 3.5, "autoguidance", True) == gr.skip()
