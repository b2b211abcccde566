"""Stable Diffusion-style backends through every generator path, on tiny random components
written to disk as diffusers folders (tests/tiny_sd.py; nothing downloaded): loading, the
pipeline surface, h-space capture / editing / inversion, directions, MultiDiffusion and
paint-with-words regions, SDXL's two text encoders, and the fallback to Shapes."""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")
torch.set_num_threads(1)

from backends.errors import InputError  # noqa: E402
from backends.generative import directions as D  # noqa: E402
from backends.generative import hspace as hspace  # noqa: E402
from backends.generative import regions  # noqa: E402
from backends.generative.sd import ModelUnavailable, load_diffusers_pipeline, parse_generator_spec  # noqa: E402
from tiny_sd import write_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def xl_dir(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sdxl"), xl=True, seed=1)


@pytest.fixture(scope="module")
def pipe(sd_dir):
    return load_diffusers_pipeline(str(sd_dir))


@pytest.fixture(scope="module")
def xl(xl_dir):
    return load_diffusers_pipeline(str(xl_dir))


def test_generator_specs_are_parsed_and_bad_ones_named(tmp_path, sd_dir):
    assert parse_generator_spec(None).kind == "shapes"
    assert parse_generator_spec("shapes").kind == "shapes"
    s = parse_generator_spec("sd-turbo")
    assert (s.kind, s.source, s.label) == ("diffusers", "stabilityai/sd-turbo", "sd-turbo")
    assert parse_generator_spec("sd15").source.endswith("stable-diffusion-v1-5")
    assert parse_generator_spec("someone/their-model").source == "someone/their-model"
    assert parse_generator_spec(str(sd_dir)).source == str(sd_dir.resolve())
    with pytest.raises(InputError, match="Unknown generator: 'sd99'"):
        parse_generator_spec("sd99")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model_index.json"):
        parse_generator_spec(str(tmp_path / "empty"))


def test_local_folder_loads_as_the_shared_pipeline(pipe):
    assert (pipe.latent_channels, pipe.latent_size, pipe.codec.config.patch) == (4, 16, 2)
    assert pipe.spatext is None and pipe.max_tokens == 77
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    a = pipe(["a red fox", "a blue star"], num_inference_steps=3, guidance_scale=5.0,
             generator=torch.Generator().manual_seed(0))
    assert a.images.shape == (2, 32, 32, 3) and 0 <= a.images.min() and a.images.max() <= 1
    b = pipe(["a red fox", "a blue star"], num_inference_steps=3, guidance_scale=5.0,
             generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a.images, b.images)  # seeded: reproducible
    neg = pipe("a red fox", negative_prompt="blurry", num_inference_steps=3, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(0))
    assert np.abs(neg.images[0] - a.images[0]).mean() > 1e-4  # the negative prompt is used
    states, mask = pipe.text_encoder.encode_tokens(["a red fox"], 77)
    assert states.shape == (1, 77, 32) and bool(mask.all())  # padded to 77 tokens, as SD is trained
    assert pipe.text_encoder.tokenize("red")[0] == "<|startoftext|>"


def test_missing_hub_model_fails_fast_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailable) as e:
        load_diffusers_pipeline("sd-turbo")
    assert time.monotonic() - t0 < 20
    msg = str(e.value)
    assert "stabilityai/sd-turbo" in msg and "not in the local Hugging Face cache" in msg
    assert "huggingface-cli download stabilityai/sd-turbo" in msg


def test_pickled_weights_are_refused(tmp_path, sd_dir):
    import shutil

    bad = tmp_path / "pickled"
    shutil.copytree(sd_dir, bad)
    unet = torch.nn.Linear(2, 2)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(unet.state_dict(), bad / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelUnavailable, match="could not load its unet.*only safetensors"):
        load_diffusers_pipeline(str(bad))


def test_hspace_capture_edit_and_exact_inversion_on_sd(pipe):
    tr = hspace.generate(pipe, "a red fox", seeds=1, steps=3, guidance_scale=4.0, eta=1.0)
    assert tr.h.shape == (3, 1, 64, 8, 8)  # SD's mid block output
    np.testing.assert_array_equal(hspace.edit(pipe, tr, torch.zeros((3, 1) + tr.h_shape)), tr.images)
    d = torch.zeros((3, 2) + tr.h_shape)
    d[:, 1] = 2.0
    frames = hspace.edit(pipe, tr, d)
    assert np.abs(frames[1].astype(int) - tr.images[0]).mean() > 0.5
    img = (np.random.default_rng(0).random((1, 32, 32, 3)) * 255).astype(np.uint8)
    inv = hspace.invert(pipe, img, "a photo", method="ddpm", steps=3, guidance_scale=4.0, eta=1.0)
    # DDPM-noise inversion replays exactly onto the VAE's reconstruction of the input
    np.testing.assert_array_equal(hspace.edit(pipe, inv, torch.zeros((3, 1) + inv.h_shape)), inv.images)
    assert np.isfinite(hspace.codec_psnr(pipe, img))


def test_directions_on_sd(pipe):
    tr = hspace.generate(pipe, "a red fox", seeds=2, steps=2, guidance_scale=4.0, eta=1.0)
    dirs, _ = D.jacobian_directions(pipe, tr, 1, k=2, iters=5, tol=1e-3)
    assert len(dirs) == 2
    td = D.text_direction(pipe, "a red fox", "a blue fox")
    assert td is not None
    bank = D.sample_bank(pipe, ["a red fox", "a blue fox"] * 2, seeds=[0, 0, 1, 1], steps=2)
    pcs = D.pca_directions(bank, k=2)
    assert len(pcs) == 2


def test_multidiffusion_and_paint_with_words_regions_on_sd(pipe):
    masks = np.zeros((2, 32, 32), np.float32)
    masks[0, :, :16] = 1
    masks[1, :, 16:] = 1
    out = regions.multidiffusion(pipe, "", masks, ["a red fox", "a blue star"], num_inference_steps=3,
                                 guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 32, 32, 3)
    pww = regions.paint_with_words(pipe, "a red fox and a blue star", masks, ["red fox", "blue star"],
                                   num_inference_steps=3, guidance_scale=4.0, generator=torch.Generator().manual_seed(0))
    assert pww.images.shape == (1, 32, 32, 3)
    assert regions.word_spans(pipe, "a red fox and a blue star", ["red fox", "blue star"])[1] is not None
    with pytest.raises(ValueError, match="SpaText needs a model trained"):
        regions.spatext(pipe, "x", masks, ["a", "b"], num_inference_steps=2)


def test_sdxl_two_text_encoders_and_micro_conditioning(xl):
    assert xl.text_encoder.dual and xl.text_encoder.dim == 64
    cond, uncond = xl.encode_prompt(["a red fox"], do_classifier_free_guidance=True)
    assert cond.states.shape == (1, 77, 64) and cond.pooled.shape == (1, 32)
    a = xl("a red fox", num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    b = xl("a blue star", num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert a.images.shape == (1, 32, 32, 3) and np.abs(a.images - b.images).mean() > 1e-4
    tr = hspace.generate(xl, "a red fox", seeds=0, steps=2, guidance_scale=3.0)
    np.testing.assert_array_equal(hspace.edit(xl, tr, torch.zeros((2, 1) + tr.h_shape)), tr.images)


def test_app_backends_fall_back_to_shapes_with_a_message(monkeypatch, tmp_path, sd_dir):
    from backends.registry import Backends
    from backends.settings import Settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    b = Backends(Settings(generator="sdxl-turbo", cache_dir=tmp_path / "c"))
    assert b.generator_spec().kind == "shapes" and b.generator_label == "shapes"
    (note,) = b.model_notes()
    assert "stabilityai/sdxl-turbo" in note and "using the Shapes generator instead" in note
    # a folder that is there, but no GPU and --device auto: named, and Shapes is used
    b = Backends(Settings(generator=str(sd_dir), device="auto", cache_dir=tmp_path / "c"))
    if b.device == "cpu":
        assert b.generator_spec().kind == "shapes"
        assert "needs a GPU" in b.model_notes()[0] and "--device cpu" in b.model_notes()[0]
    b = Backends(Settings(generator="not a model", cache_dir=tmp_path / "c"))
    assert "Unknown generator: 'not a model'" in b.model_notes()[0]


def test_generate_service_runs_the_chosen_sd_folder(tmp_path, sd_dir):
    from app.services.generate import GenerateService
    from backends.registry import Backends
    from backends.settings import Settings

    b = Backends(Settings(generator=str(sd_dir), device="cpu", cache_dir=tmp_path / "c"))
    svc = GenerateService(b)
    img, notes = svc.generate("a red fox", steps=2, guidance=3.0, seed=4)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert b.model_notes() == [] and "Generator: **" in svc.status()
    assert b.generator_pipeline() is b.generator_pipeline()  # loaded once


def test_launch_accepts_the_backend_flags():
    import launch

    a = launch.parse_args(["--generator", "sd-turbo", "--encoder", "openclip:ViT-B-32/laion2b_s34b_b79k",
                           "--text-encoder", "minilm", "--download", "--attention-slicing", "--cpu-offload"])
    assert (a.generator, a.encoder, a.text_encoder, a.download) == ("sd-turbo", "openclip:ViT-B-32/laion2b_s34b_b79k",
                                                                    "minilm", True)
    assert a.attention_slicing and a.cpu_offload
    with pytest.raises(SystemExit):
        launch.parse_args(["--download", "--offline"])


def test_shapes_sampling_defaults_are_the_shipped_models():
    """The Generate tab's sliders start at the defaults the shipped Shapes model is sampled with."""
    from backends.generative.sd import GeneratorSpec, sampling_defaults
    from backends.shapes.generator import WEIGHTS
    from backends.shapes.pipeline import load_shapes_pipeline

    if not WEIGHTS.exists():
        pytest.skip("no Shapes generator weights in assets/")
    pipe = load_shapes_pipeline()
    assert sampling_defaults(GeneratorSpec("shapes")) == (pipe.default_steps, pipe.default_guidance_scale)


def test_guidance_methods_offered_match_the_loaded_pipelines(tmp_path):
    """The Generate tab's method choices (read from config, no weights loaded): the default first."""
    from backends.generative.sd import GeneratorSpec, guidance_methods
    from backends.shapes.generator import WEIGHTS
    from backends.shapes.pipeline import load_shapes_pipeline

    assert guidance_methods(GeneratorSpec("diffusers", str(tmp_path))) == ["cfg"]
    if not WEIGHTS.exists():
        pytest.skip("no Shapes generator weights in assets/")
    pipe = load_shapes_pipeline()
    methods = guidance_methods(GeneratorSpec("shapes"))
    assert methods[0] == pipe.default_guidance_method and sorted(methods) == sorted(pipe.guidance_methods)
