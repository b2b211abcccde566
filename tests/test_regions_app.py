"""Regions tab through gradio_client against the launched app (tiny random model; the Shapes
model too when its weights are there)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
gradio_client = pytest.importorskip("gradio_client")

from backends.generative import regions as R  # noqa: E402
from backends.shapes.generator import WEIGHTS  # noqa: E402

R.register_pipeline("tiny", R.tiny_random_pipeline)


@pytest.fixture(scope="module")
def client(atlas_app):
    url, _ = atlas_app
    return gradio_client.Client(url, verbose=False)


@pytest.fixture(scope="module")
def canvas_png(tmp_path_factory):
    """Red box top left, blue box bottom right, a green speck."""
    c = np.full((512, 512, 3), 255, np.uint8)
    c[30:230, 30:230] = R.PALETTE["red"]
    c[280:480, 280:480] = R.PALETTE["blue"]
    c[300:304, 40:44] = R.PALETTE["green"]
    path = tmp_path_factory.mktemp("regions") / "canvas.png"
    Image.fromarray(c).save(path)
    return str(path)


def test_palette(client):
    pal = client.predict(api_name="/regions_palette")
    assert [p["colour"] for p in pal] == list(R.PALETTE)
    assert all(p["hex"].startswith("#") and len(p["hex"]) == 7 for p in pal)


def test_parse_reports_regions_and_specks(client, canvas_png):
    preview, info = client.predict(gradio_client.handle_file(canvas_png), api_name="/regions_parse")
    assert [r["colour"] for r in info["regions"]] == ["red", "blue"]
    assert abs(info["regions"][0]["area"] - (200 * 200) / 512 ** 2) < 0.01
    assert any("speck" in n and "green" in n for n in info["notes"])
    img = np.asarray(Image.open(preview))
    assert img.shape[:2] == (256, 256)


def test_generate_compare_returns_one_image_per_method(client, canvas_png):
    files, info = client.predict(gradio_client.handle_file(canvas_png), {"red": "a red circle", "blue": "a blue star"},
                                 "on a black background", "compare", 7, 3, 4.0, -1, 0.4, "tiny",
                                 api_name="/regions_generate")
    assert info["methods"] == list(R.METHODS)
    assert len(files) == 3 and set(info["seconds"]) == set(R.METHODS)
    imgs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    assert all(i.shape == (64, 64, 3) for i in imgs)
    # the same seed through the single-method path gives the same MultiDiffusion image
    files2, _ = client.predict(gradio_client.handle_file(canvas_png), {"red": "a red circle", "blue": "a blue star"},
                               "on a black background", "multidiffusion", 7, 3, 4.0, -1, 0.4, "tiny",
                               api_name="/regions_generate")
    np.testing.assert_array_equal(np.asarray(Image.open(files2[0]).convert("RGB")), imgs[1])


@pytest.mark.parametrize("prompts,method,match", [
    ({"red": "a red circle"}, "spatext", "region 'blue' has no prompt"),
    ({"red": "a", "blue": "b", "cyan": "c"}, "spatext", "prompt for 'cyan' has no region"),
    ({"red": "a", "green": "b", "blue": "c"}, "spatext", "dropped as specks"),
    ({"red": "a", "blue": "b"}, "magic", "Unknown method: 'magic'"),
    ({"pink": "a"}, "spatext", "Unknown region colour: 'pink'"),
])
def test_generate_validation_messages(client, canvas_png, prompts, method, match):
    with pytest.raises(Exception, match=match):
        client.predict(gradio_client.handle_file(canvas_png), prompts, "", method, 0, 2, 4.0, -1, 0.4, "tiny",
                       api_name="/regions_generate")


def test_blank_canvas_has_no_regions(client, tmp_path):
    p = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 200, 3), 255, np.uint8)).save(p)
    _, info = client.predict(gradio_client.handle_file(str(p)), api_name="/regions_parse")
    assert info["regions"] == [] and any("200x300" in n for n in info["notes"])
    with pytest.raises(Exception, match="no regions"):
        client.predict(gradio_client.handle_file(str(p)), {"red": "a red circle"}, "", "spatext", 0, 2, 4.0, -1, 0.4,
                       "tiny", api_name="/regions_generate")


@pytest.mark.skipif(not WEIGHTS.exists(), reason="Shapes generator weights not trained yet")
def test_generate_with_the_shapes_model(client, canvas_png):
    files, info = client.predict(gradio_client.handle_file(canvas_png), {"red": "a red circle", "blue": "a blue star"},
                                 "on a black background", "spatext", 0, 20, 4.0, -1, 0.4, "shapes",
                                 api_name="/regions_generate")
    img = np.asarray(Image.open(files[0]).convert("RGB"))
    pipe = R.get_pipeline("shapes")
    side = pipe.latent_size * pipe.codec.patch  # the generator's image size (pixel-unshuffle)
    assert img.shape == (side, side, 3) and img.std() > 1.0


def test_an_uploaded_layout_is_scaled_to_the_canvas_keeping_palette_colours():
    from app.services.regions import canvas_from_upload

    img = np.zeros((100, 60, 4), np.uint8)  # transparent, not square
    img[10:50, 10:50] = (*R.PALETTE["red"], 255)
    out = canvas_from_upload(img)
    assert out.shape == (R.CANVAS_SIZE, R.CANVAS_SIZE, 4) and (out[..., 3] == 255).all()
    colours = {tuple(c) for c in out[..., :3].reshape(-1, 3)}
    assert colours == {(255, 255, 255), R.PALETTE["red"]}  # no blended edge colours
    assert R.parse_canvas(out).present == ["red"]
