"""The whole app launched with `--generator <SD folder> --device cpu` (a tiny random SD folder from
tests/tiny_sd.py): Generate, Directions and Regions run on it through their API endpoints."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
gradio_client = pytest.importorskip("gradio_client")
torch.set_num_threads(1)

from conftest import free_port  # noqa: E402
from tiny_sd import write_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def sd_app(tmp_path_factory):
    from app.main import create_app
    from backends.registry import Backends
    from backends.settings import Settings

    folder = write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
    settings = Settings.from_env(cache_dir=str(tmp_path_factory.mktemp("cache")), port=free_port(),
                                 generator=str(folder), device="cpu")
    backends = Backends(settings)
    assert backends.model_notes() == []
    demo = create_app(settings, backends)
    demo.launch(server_name="127.0.0.1", server_port=settings.port, prevent_thread_lock=True, quiet=True)
    yield gradio_client.Client(f"http://127.0.0.1:{settings.port}/", verbose=False), backends
    demo.close()


def _png(data_url: str) -> np.ndarray:
    import base64
    import io

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_generate_tab_runs_the_sd_folder(sd_app):
    client, backends = sd_app
    assert backends.generator_spec().kind == "diffusers"
    path, notes = client.predict("a red fox", "", 1, 2, 3.0, api_name="/generate")
    assert np.asarray(Image.open(path)).shape == (32, 32, 3)  # the tiny VAE's 32x32, not Shapes' 32 by chance
    assert "2 DDIM steps" in notes
    assert backends.generator_pipeline().codec.config.patch == 2


def test_directions_edit_an_sd_sample(sd_app):
    client, _ = sd_app
    src = client.predict("a red fox", 3, 3, 1.0, 3.0, "mid_block", api_name="/directions_source_prompt")
    dirs = client.predict(src["source"], 1, 2, "", api_name="/directions_image_specific")
    assert len(dirs) == 2
    base = _png(src["image"])
    out = client.predict(src["source"], [dirs[0]["id"]], [0.0], 0.0, 1.0, False, api_name="/directions_edit")
    np.testing.assert_array_equal(_png(out["image"]), base)  # strength 0 replays the source exactly
    out = client.predict(src["source"], [dirs[0]["id"]], [3.0], 0.0, 1.0, False, api_name="/directions_edit")
    assert np.abs(_png(out["image"]).astype(int) - base).mean() > 0.5


def test_regions_use_multidiffusion_on_sd_and_name_spatext_as_unavailable(sd_app, tmp_path):
    client, _ = sd_app
    c = np.full((256, 256, 3), 255, np.uint8)
    from backends.generative import regions as R

    c[:, :128] = R.PALETTE["red"]
    c[:, 128:] = R.PALETTE["blue"]
    Image.fromarray(c).save(tmp_path / "canvas.png")
    canvas = gradio_client.handle_file(str(tmp_path / "canvas.png"))
    prompts = {"red": "a red fox", "blue": "a blue lake"}
    files, info = client.predict(canvas, prompts, "", "multidiffusion", 0, 2, 3.0, -1, 0.4, "",
                                 api_name="/regions_generate")
    assert info["methods"] == ["multidiffusion"] and np.asarray(Image.open(files[0])).shape[:2] == (32, 32)
    with pytest.raises(Exception, match="use multidiffusion or paint_with_words"):
        client.predict(canvas, prompts, "", "spatext", 0, 2, 3.0, -1, 0.4, "", api_name="/regions_generate")
