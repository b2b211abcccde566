"""LatentDiffusionPipeline with tiny random components (diffusers-test style, nothing downloaded)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)

from backends.generative.pipeline import LatentDiffusionPipeline  # noqa: E402
from backends.shapes.generator import GeneratorConfig, build_generator  # noqa: E402
from text_double import DummyTextEncoder  # noqa: E402


def get_dummy_components(spatext: bool = True):
    cfg = GeneratorConfig(image_size=32, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                          head_dim=8, norm_num_groups=4, spatext_channels=4 if spatext else 0, max_tokens=8)
    gen = build_generator(cfg, seed=0)
    gen.unet.eval()
    return dict(unet=gen.unet, scheduler=gen.make_scheduler(), codec=gen.codec, text_encoder=DummyTextEncoder(),
                spatext=gen.spatext if spatext else None, max_tokens=cfg.max_tokens)


@pytest.fixture(scope="module")
def pipe():
    return LatentDiffusionPipeline(**get_dummy_components())


def run(pipe, seed=0, **kw):
    kw.setdefault("num_inference_steps", 2)
    return pipe(kw.pop("prompt", "a red circle"), generator=torch.Generator().manual_seed(seed), **kw)


def test_two_steps_image_shape_and_range(pipe):
    out = run(pipe)
    assert out.images.shape == (1, 32, 32, 3)
    assert out.images.dtype == np.float32
    assert 0.0 <= out.images.min() and out.images.max() <= 1.0
    assert out.notes == []


def test_deterministic_with_seed(pipe):
    a, b, c = run(pipe, 0).images, run(pipe, 0).images, run(pipe, 1).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_batch_of_prompts_and_images_per_prompt(pipe):
    out = run(pipe, prompt=["a red circle", "a blue star"], num_images_per_prompt=2)
    assert out.images.shape == (4, 32, 32, 3)


def test_negative_prompt_and_guidance_change_output(pipe):
    base = run(pipe, guidance_scale=5.0).images
    neg = run(pipe, guidance_scale=5.0, negative_prompt="a green square").images
    no_cfg = run(pipe, guidance_scale=1.0).images
    assert np.abs(base - neg).max() > 1e-4
    assert np.abs(base - no_cfg).max() > 1e-4


def test_cfg_is_one_batched_unet_call_hookable_at_mid_block(pipe):
    seen = []
    h = pipe.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append((o.shape[0], pipe.cfg_halves)))
    try:
        run(pipe, guidance_scale=4.0, num_inference_steps=3)
        run(pipe, guidance_scale=1.0, num_inference_steps=1)
    finally:
        h.remove()
    assert [s[0] for s in seen] == [2, 2, 2, 1]
    unc, cond = seen[0][1]
    assert (unc, cond) == (slice(0, 1), slice(1, 2))


def test_latents_are_honoured(pipe):
    lat = torch.randn(1, 48, 8, 8, generator=torch.Generator().manual_seed(3))
    a = pipe("a red circle", num_inference_steps=2, latents=lat).images
    b = pipe("a red circle", num_inference_steps=2, latents=lat.clone(), generator=torch.Generator().manual_seed(99)).images
    np.testing.assert_array_equal(a, b)
    c = run(pipe, 3).images  # the seeded generator draws the same latents
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_callback_called_each_step_and_can_replace_latents(pipe):
    calls = []

    def cb(p, i, t, kw):
        calls.append(int(t))
        return {"latents": torch.zeros_like(kw["latents"])} if i == 2 else None

    out = run(pipe, num_inference_steps=3, callback_on_step_end=cb, output_type="latent")
    assert len(calls) == 3 and calls == sorted(calls, reverse=True)
    assert torch.count_nonzero(out.images) == 0


def test_eta_uses_generator_noise(pipe):
    a = run(pipe, eta=1.0, num_inference_steps=3).images
    b = run(pipe, eta=1.0, num_inference_steps=3).images
    c = run(pipe, eta=0.0, num_inference_steps=3).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-4


def test_region_masks_path(pipe):
    masks = np.zeros((2, 32, 32), bool)
    masks[0, :16, :16] = True
    masks[1, 16:, 16:] = True
    plain = run(pipe).images
    reg = run(pipe, region_masks=masks, region_prompts=["a red circle", "a blue square"]).images
    assert reg.shape == (1, 32, 32, 3)
    assert np.abs(plain - reg).max() > 1e-4
    # a precomputed map gives the same image
    smap = pipe.prepare_region_map(1, masks, ["a red circle", "a blue square"])
    again = run(pipe, region_map=smap).images
    np.testing.assert_allclose(reg, again, atol=1e-6)
    # empty global prompt is allowed when regions are given
    assert run(pipe, prompt="", region_masks=masks[0], region_prompts=["a red circle"]).images.shape == (1, 32, 32, 3)


def test_numpy_scalars_are_accepted(pipe):
    out = run(pipe, guidance_scale=np.float32(3.0), num_inference_steps=np.int64(2))
    assert out.images.shape == (1, 32, 32, 3)


def test_output_types(pipe):
    pil = run(pipe, output_type="pil").images
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"
    assert tuple(run(pipe, output_type="pt").images.shape) == (1, 3, 32, 32)


def test_long_and_non_ascii_prompts_are_reported_not_fatal(pipe):
    out = run(pipe, prompt="red circle " * 1000)
    assert out.images.shape == (1, 32, 32, 3)
    assert any("cut" in n for n in out.notes)
    assert run(pipe, prompt="un cercle rouge — ünïcödé ★ 赤い円").images.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("kwargs, name", [
    (dict(prompt=None), "prompt"),
    (dict(prompt=""), "prompt"),
    (dict(prompt="   "), "prompt"),
    (dict(prompt=[]), "prompt"),
    (dict(prompt=3), "prompt"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=10**6), "num_inference_steps"),
    (dict(num_inference_steps=2.5), "num_inference_steps"),
    (dict(guidance_scale=float("nan")), "guidance_scale"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(guidance_scale=1e9), "guidance_scale"),
    (dict(eta=2.0), "eta"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(negative_prompt=["a", "b", "c"]), "negative_prompt"),
    (dict(latents=torch.zeros(1, 3, 32, 32)), "latents"),
    (dict(region_masks=np.ones((2, 64, 64), bool), region_prompts=["a red circle"]), "region_prompts"),
    (dict(region_masks=np.ones((1, 64, 64), bool)), "region_prompts"),
    (dict(region_masks=np.ones((64,), bool), region_prompts=["x"]), "region_masks"),
    (dict(region_prompts=["a red circle"]), "region_prompts"),
    (dict(callback_on_step_end=3), "callback_on_step_end"),
    (dict(region_map=torch.zeros(1, 3, 8, 8)), "region_map"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(pipe, kwargs, name):
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", "a red circle")
    with pytest.raises(ValueError, match=f"`{name}`"):
        pipe(prompt, num_inference_steps=kwargs.pop("num_inference_steps", 2), **kwargs)


def test_region_masks_need_spatext_channels():
    pipe = LatentDiffusionPipeline(**get_dummy_components(spatext=False))
    assert run(pipe).images.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="region_masks"):
        run(pipe, region_masks=np.ones((1, 64, 64), bool), region_prompts=["a red circle"])


def test_region_maps_use_their_own_default_guidance():
    """With a region map and no guidance given, the pipeline uses default_region_guidance_scale."""
    import torch

    pipe = LatentDiffusionPipeline(**get_dummy_components())
    seen = []
    orig = pipe.predict

    def spy(latents, t, cond, uncond, guidance_scale, smap=None, smap_uncond=None, **kw):
        seen.append(guidance_scale)
        return orig(latents, t, cond, uncond, guidance_scale, smap, smap_uncond, **kw)

    pipe.predict = spy
    pipe.default_guidance_scale, pipe.default_region_guidance_scale = 4.0, 2.5
    g = torch.Generator().manual_seed(0)
    pipe("a red circle", num_inference_steps=1, generator=g)
    masks = np.zeros((1, 32, 32), np.float32)
    masks[0, :16] = 1
    pipe("a red circle", num_inference_steps=1, generator=g, region_masks=masks, region_prompts=["red circle"])
    pipe("a red circle", num_inference_steps=1, generator=g, region_masks=masks, region_prompts=["red circle"],
         guidance_scale=6.0)
    assert seen == [4.0, 2.5, 6.0]


# ---------------------------------------------------------------------------------------
# Autoguidance: guide(x|c) + w·(unet(x|c) − guide(x|c)) with a weaker model of the same inputs

def auto_pipe(default="auto"):
    comps = get_dummy_components()
    guide = get_dummy_components()["unet"]  # same architecture, its own weights
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return LatentDiffusionPipeline(**comps, guide_unet=guide, default_guidance_method=default)


def test_autoguidance_extrapolates_from_the_guide_model_to_the_model():
    pipe = auto_pipe()
    x = torch.randn(2, pipe.latent_channels, pipe.latent_size, pipe.latent_size)
    t = pipe.scheduler.timesteps[0] if len(pipe.scheduler.timesteps) else torch.tensor(999)
    cond, uncond = pipe.encode_prompt(["a red circle", "a blue star"])
    smap = pipe.prepare_region_map(2)
    with torch.no_grad():
        good = pipe.predict(x, t, cond, None, 1.0, smap)  # the model alone
        weak = pipe._unet_out(pipe.guide_unet, torch.cat([x, smap], 1), t, cond.states, cond.mask, cond.pooled)
        auto = pipe.predict(x, t, cond, uncond, 3.0, smap, method="auto")
        cfg = pipe.predict(x, t, cond, uncond, 3.0, smap, method="cfg")
        one = pipe.predict(x, t, cond, uncond, 1.0, smap, method="auto")
        half = pipe.predict(x, t, cond, uncond, 0.5, smap, method="auto")
    assert (good - weak).abs().max() > 1e-3  # the guide really is another model
    torch.testing.assert_close(auto, weak + 3.0 * (good - weak), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one, good)  # scale <= 1: the model alone (guidance off, as with cfg)
    torch.testing.assert_close(half, good)
    assert (auto - cfg).abs().max() > 1e-3
    with pytest.raises(ValueError, match="`method`"):
        pipe.predict(x, t, cond, uncond, 3.0, smap, method="guess")


def test_autoguidance_is_the_default_when_configured_and_hooks_see_only_the_model():
    pipe = auto_pipe()
    assert pipe.guidance_methods == ("cfg", "auto") and pipe.default_guidance_method == "auto"
    seen, guide_calls = [], []
    h = pipe.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append((o.shape[0], pipe.cfg_halves)))
    hg = pipe.guide_unet.mid_block.register_forward_hook(lambda m, i, o: guide_calls.append(o.shape[0]))
    try:
        a = run(pipe, guidance_scale=3.0, num_inference_steps=2).images
        b = run(pipe, guidance_scale=3.0, num_inference_steps=2, guidance_method="auto").images
        c = run(pipe, guidance_scale=3.0, num_inference_steps=2, guidance_method="cfg").images
    finally:
        h.remove()
        hg.remove()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert (run(pipe, num_inference_steps=1).guidance_method,
            run(pipe, num_inference_steps=1, guidance_method="cfg").guidance_method) == ("auto", "cfg")
    # auto: the model's batch of 1 (its rows are the conditional "half"); cfg: one batched call of 2
    assert [s[0] for s in seen] == [1, 1, 1, 1, 2, 2]
    assert seen[0][1] == (slice(0, 0), slice(0, 1))
    assert guide_calls == [1, 1, 1, 1]


def test_negative_prompts_and_region_maps_fall_back_to_classifier_free_guidance():
    pipe = auto_pipe()
    neg = run(pipe, guidance_scale=3.0, negative_prompt="a green square")
    cfg = run(pipe, guidance_scale=3.0, negative_prompt="a green square", guidance_method="cfg")
    np.testing.assert_array_equal(neg.images, cfg.images)
    assert any("negative prompt" in n for n in neg.notes) and neg.guidance_method == "cfg"
    masks = np.zeros((1, 32, 32), np.float32)
    masks[0, :16] = 1
    kw = dict(region_masks=masks, region_prompts=["red circle"], guidance_scale=3.0)
    np.testing.assert_array_equal(run(pipe, **kw).images, run(pipe, guidance_method="cfg", **kw).images)
    with pytest.raises(ValueError, match="region maps"):
        run(pipe, guidance_method="auto", **kw)
    with pytest.raises(ValueError, match="`negative_prompt`"):
        run(pipe, guidance_method="auto", negative_prompt="a green square")


def test_guidance_method_is_checked():
    plain = LatentDiffusionPipeline(**get_dummy_components())
    assert plain.guidance_methods == ("cfg",)
    with pytest.raises(ValueError, match="`guidance_method`.*no guide model"):
        run(plain, guidance_method="auto")
    with pytest.raises(ValueError, match="`guidance_method`"):
        run(auto_pipe(), guidance_method="classifier")
    with pytest.raises(ValueError, match="guide"):
        LatentDiffusionPipeline(**get_dummy_components(), default_guidance_method="auto")
    with pytest.raises(ValueError, match="default_guidance_method"):
        LatentDiffusionPipeline(**get_dummy_components(), default_guidance_method="nope")
