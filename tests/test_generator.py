"""The Shapes generator: codec, SpaText map, weights round trip, one training step, shipped weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)

from backends.shapes import generator as G  # noqa: E402


def tiny_config(**kw):
    base = dict(image_size=32, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                head_dim=8, norm_num_groups=4, spatext_channels=4)
    base.update(kw)
    return G.GeneratorConfig(**base)


@pytest.mark.parametrize("patch, size", [(4, 32), (4, 64), (2, 32)])
def test_codec_round_trips_exactly(patch, size):
    codec = G.PixelUnshuffleCodec(patch)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, size, size, 3), dtype=np.uint8)
    x = codec.images_to_tensor(images)
    z = codec.encode(x)
    assert tuple(z.shape) == (3, 3 * patch * patch, size // patch, size // patch)
    assert torch.equal(codec.decode(z), x)
    np.testing.assert_array_equal(codec.tensor_to_images(codec.decode(z)), images)


def test_codec_rejects_bad_shapes():
    codec = G.PixelUnshuffleCodec(4)
    with pytest.raises(ValueError, match="images"):
        codec.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="multiple of 4"):
        codec.encode(torch.zeros(1, 3, 30, 30))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(torch.zeros(1, 12, 8, 8))


def test_spatext_map_is_zero_outside_regions_and_follows_masks():
    cfg = tiny_config()
    sp = G.build_spatext(cfg)
    masks = torch.zeros(1, 2, 32, 32)
    masks[0, 0, :16, :16] = 1
    masks[0, 1, 16:, 16:] = 1
    emb = torch.nn.functional.normalize(torch.randn(1, 2, 384), dim=-1)
    m = sp(masks, emb, cfg.latent_size)
    assert tuple(m.shape) == (1, 4, 8, 8)
    assert torch.count_nonzero(m[0, :, :4, 4:]) == 0 and torch.count_nonzero(m[0, :, 4:, :4]) == 0
    assert torch.allclose(m[0, :, 0, 0], sp.proj(emb[0, 0]), atol=1e-6)
    assert torch.allclose(m[0, :, 7, 7], sp.proj(emb[0, 1]), atol=1e-6)
    assert torch.count_nonzero(sp(masks[:, :0], emb[:, :0], 8)) == 0


def test_pool_states_is_mean_over_mask_normalised():
    states = torch.randn(2, 5, 384)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    v = G.pool_states(states, mask)
    ref = torch.nn.functional.normalize(states[0, :3].mean(0), dim=0)
    assert torch.allclose(v[0], ref, atol=1e-6)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_config_json_round_trip_and_unknown_keys_ignored():
    cfg = tiny_config(metrics={"a": 1})
    d = json.loads(cfg.to_json())
    d["future_key"] = 3
    back = G.GeneratorConfig.from_json(json.dumps(d))
    assert back == cfg and back.latent_channels == 48 and back.latent_size == 8


def test_save_and_load_fp16_round_trip(tmp_path):
    gen = G.build_generator(tiny_config(), seed=0)
    path = tmp_path / "g.safetensors"
    G.save_generator(gen, path)
    assert (tmp_path / "g.json").exists()
    loaded = G.load_generator(path)
    assert loaded is G.load_generator(path)  # cached
    a = gen.unet.state_dict()
    b = loaded.unet.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-3, rtol=1e-2), k
    with pytest.raises(FileNotFoundError, match="train"):
        G.load_generator(tmp_path / "missing.safetensors")


def test_one_training_step_runs_and_resumes(tmp_path):
    from backends.shapes import train_generator

    args = ["--small", "--steps", "1", "--n-scenes", "40", "--batch", "4", "--out", str(tmp_path),
            "--eval-every", "1", "--eval-n", "2", "--no-progress", "--guide-step", "1"]
    assert train_generator.main(args) == 0
    run = tmp_path / "runs" / "generator"
    assert (run / "checkpoint.safetensors").exists()
    # the guide step's EMA weights became the autoguidance guide, and the export samples with it
    weights = tmp_path / "generator.safetensors"
    assert G.guide_path(weights) == tmp_path / "generator_guide.safetensors"
    cfg = G.GeneratorConfig.from_json(weights.with_suffix(".json").read_text())
    assert (cfg.guidance_method, cfg.guide_weights, cfg.guidance_scale) == ("auto", "generator_guide.safetensors", 3.5)
    assert cfg.region_guidance_scale == 2.5
    assert (cfg.directions_record_half, cfg.directions_delta_half) == ("cond", "cond")
    assert G.load_generator(G.guide_path(weights)).config.trained_steps == 1
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and any(r.get("event") == "eval" for r in log)
    assert (tmp_path / "generator.safetensors").exists()
    # resumed with single-object scenes drawn more often and fewer region maps (a curriculum)
    assert train_generator.main(args[:2] + ["2"] + args[3:] + ["--resume", "--single-share", "0.8", "--p-map", "0.3"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == 2
    with pytest.raises(SystemExit, match="single-share"):
        train_generator.main(args[:2] + ["3"] + args[3:] + ["--resume", "--single-share", "1.5"])
    # a fine-tune aimed at a band of noise levels
    assert train_generator.main(args[:2] + ["3"] + args[3:] + ["--resume", "--t-focus", "50,600,0.7"]) == 0
    for bad in ("50,600", "600,50,0.5", "0,2000,0.5", "a,b,c"):
        with pytest.raises(SystemExit, match="t-focus"):
            train_generator.main(args[:2] + ["4"] + args[3:] + ["--resume", "--t-focus", bad])
    with pytest.raises(SystemExit, match="directions-halves"):
        train_generator.main(args[:2] + ["4"] + args[3:] + ["--resume", "--directions-halves", "cond,uncond"])
    # the GPU options, on the CPU: bfloat16 autocast trains and resumes; cuda is refused where torch sees none
    assert train_generator.main(args[:2] + ["4"] + args[3:] + ["--resume", "--device", "auto", "--bf16"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    start = [r for r in log if r.get("event") == "start"][-1]
    assert start["bf16"] is True and start["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            train_generator.main(args[:2] + ["5"] + args[3:] + ["--resume", "--device", "cuda"])
    # the h-swap loss on colour twins (backends/shapes/colour_twins.py) joins the step and is logged
    assert train_generator.main(args[:2] + ["5"] + args[3:] + ["--resume", "--swap-pairs", "2", "--device", "cpu"]) == 0
    last = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    assert last["step"] == 5 and last["mse_swap"] > 0


def test_shipped_weights_load_and_generate():
    if not G.WEIGHTS.exists():
        pytest.skip("assets/shapes/generator.safetensors not trained yet")
    assert G.WEIGHTS.stat().st_size <= 25 * 2**20
    from backends.shapes.pipeline import load_shapes_pipeline

    pipe = load_shapes_pipeline()
    out = pipe("a large red circle in the center", num_inference_steps=4,
               generator=torch.Generator().manual_seed(0))
    cfg = G.load_generator().config
    assert out.images.shape == (1, cfg.image_size, cfg.image_size, 3)
    assert out.images.std() > 0.01  # not a blank image
    # text prompts sample with autoguidance by the shipped guide: the same run, earlier
    assert pipe.default_guidance_method == "auto" and pipe.guide_unet is not None
    guide = G.load_generator(G.guide_path())
    assert 0 < guide.config.trained_steps < cfg.trained_steps
    assert G.guide_path().stat().st_size + G.WEIGHTS.stat().st_size <= 25 * 2**20


def test_a_guide_that_does_not_fit_the_generator_is_refused(tmp_path):
    from backends.shapes.pipeline import load_shapes_pipeline

    small = dict(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), head_dim=8,
                 norm_num_groups=4, spatext_channels=4)
    gen = G.build_generator(G.GeneratorConfig(**small, guide_weights="guide.safetensors", guidance_method="auto"))
    for name, guide_channels in (("bad", 8), ("good", 4)):  # weights are cached per path: two folders
        (tmp_path / name).mkdir()
        G.save_generator(gen, tmp_path / name / "generator.safetensors")
        G.save_generator(G.build_generator(G.GeneratorConfig(**{**small, "spatext_channels": guide_channels})),
                         tmp_path / name / "guide.safetensors")
    with pytest.raises(ValueError, match="guide.safetensors does not fit.*spatext_channels"):
        load_shapes_pipeline(path=tmp_path / "bad" / "generator.safetensors")
    pipe = load_shapes_pipeline(path=tmp_path / "good" / "generator.safetensors")
    assert pipe.default_guidance_method == "auto"
    assert pipe("a red circle", num_inference_steps=2).images.shape == (1, 32, 32, 3)


def test_guide_path_only_names_a_file_next_to_the_config(tmp_path):
    gen = G.build_generator(G.GeneratorConfig(block_out_channels=(8, 16), down_block_types=("DownBlock2D",
                            "CrossAttnDownBlock2D"), head_dim=8, norm_num_groups=4, spatext_channels=4), seed=0)
    weights = tmp_path / "generator.safetensors"
    for name, expect in ((None, None), ("missing.safetensors", None), ("../generator.safetensors", None),
                         ("guide.safetensors", tmp_path / "guide.safetensors")):
        gen.config.guide_weights = name
        G.save_generator(gen, weights)
        if name == "guide.safetensors":
            G.save_generator(gen, tmp_path / name)
        assert G.guide_path(weights) == expect, name


def test_t_focus_draws_timesteps_from_the_band():
    from backends.shapes import train_generator

    seen = []
    gen = G.build_generator(G.GeneratorConfig(block_out_channels=(8, 16), down_block_types=("DownBlock2D",
                            "CrossAttnDownBlock2D"), head_dim=8, norm_num_groups=4, spatext_channels=4), seed=0)
    unet_forward = gen.unet.forward

    def forward(x, t, *a, **k):
        seen.append(t.clone())
        return unet_forward(x, t, *a, **k)

    gen.unet.forward = forward
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.float()
    from backends.shapes import scenes
    from backends.shapes.text import get_text_encoder

    b = scenes.make_batch(64, seed=0, split="train", single=True, size=32)
    st, tm = get_text_encoder().encode_tokens([scenes.canonical_caption(s) for s in b.specs], max_len=gen.config.max_tokens)
    batch = dict(images=b.images, states=st.numpy(), tmask=tm.numpy(), rmasks=np.zeros((64, 3, 32, 32), np.float32),
                 remb=np.zeros((64, 3, 384), np.float32), rvalid=np.zeros((64, 3), bool))
    empty = get_text_encoder().encode_tokens([""], max_len=gen.config.max_tokens)
    rng = np.random.default_rng(0)
    train_generator.training_loss(gen, alphas, batch, rng, empty=(empty[0][0], empty[1][0]), t_focus=(50, 600, 1.0))
    train_generator.training_loss(gen, alphas, batch, rng, empty=(empty[0][0], empty[1][0]))
    focused, uniform = seen
    assert 50 <= int(focused.min()) and int(focused.max()) < 600
    assert int(uniform.max()) >= 600  # 64 uniform draws from 0..999


def test_sampler_does_not_clip_x0_unless_configured():
    """Clipping x̂0 to [-1, 1] biased saturated colours (README): off by default, a config switch, kept in JSON."""
    assert G.make_scheduler(G.GeneratorConfig()).config.clip_sample is False
    cfg = G.GeneratorConfig(clip_sample=True)
    assert G.make_scheduler(cfg).config.clip_sample is True
    assert G.GeneratorConfig.from_json(cfg.to_json()).clip_sample is True


def test_learning_rate_warms_up_holds_and_decays_to_the_floor():
    from types import SimpleNamespace

    from backends.shapes.train_generator import learning_rate

    a = SimpleNamespace(lr=1e-3, warmup=10, steps=100, decay_start=None, lr_min_frac=0.1)
    assert learning_rate(0, a) == pytest.approx(1e-4) and learning_rate(50, a) == pytest.approx(1e-3)
    assert learning_rate(99, a) == pytest.approx(1e-3)  # no decay asked: constant (runs can be extended)
    a.decay_start = 60
    assert learning_rate(60, a) == pytest.approx(1e-3)
    assert learning_rate(80, a) == pytest.approx(1e-3 * 0.55)
    assert learning_rate(100, a) == pytest.approx(1e-4)


def test_without_pooled_conditioning_the_prompt_enters_only_by_cross_attention():
    cfg = G.GeneratorConfig(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            head_dim=8, norm_num_groups=4, spatext_channels=4, pooled_conditioning=False)
    gen = G.build_generator(cfg)
    assert gen.unet.class_embedding is None
    assert G.GeneratorConfig.from_json(cfg.to_json()).pooled_conditioning is False
    from backends.generative.pipeline import LatentDiffusionPipeline
    from text_double import DummyTextEncoder

    pipe = LatentDiffusionPipeline(gen.unet.eval(), gen.make_scheduler(), gen.codec, DummyTextEncoder(), gen.spatext,
                                   max_tokens=8)
    a = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    b = pipe("a blue star", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert np.abs(a - b).mean() > 0  # the prompt still reaches the image (cross-attention)


@pytest.mark.parametrize("text_at", ["all", "encoder", "bottleneck"])
def test_text_at_places_cross_attention_and_survives_the_json(text_at):
    from backends.shapes.train_generator import TEXT_AT

    down, up = TEXT_AT[text_at](2)
    cfg = tiny_config(down_block_types=down, up_block_types=up, pooled_conditioning=False)
    back = G.GeneratorConfig.from_json(cfg.to_json())
    assert back == cfg
    unet = G.build_generator(back).unet
    attn = lambda blocks: [hasattr(b, "attentions") for b in blocks]  # noqa: E731
    assert attn(unet.down_blocks) == {"all": [False, True], "encoder": [False, True], "bottleneck": [False, False]}[text_at]
    assert attn(unet.up_blocks) == {"all": [True, False], "encoder": [False, False], "bottleneck": [False, False]}[text_at]
    assert hasattr(unet.mid_block, "attentions")


@pytest.mark.parametrize("text_at, mid_prompt", [("bottleneck", False), ("bottleneck", True), ("all", False)])
def test_with_text_only_at_the_bottleneck_the_prompt_reaches_the_image_only_through_h(text_at, mid_prompt):
    """What makes h-space edits work: fix the mid block's output and the prompt no longer matters
    (with cross-attention in the up blocks, it still does)."""
    from backends.shapes.train_generator import TEXT_AT

    down, up = TEXT_AT[text_at](2)
    gen = G.build_generator(tiny_config(down_block_types=down, up_block_types=up, pooled_conditioning=False,
                                        mid_prompt=mid_prompt))
    unet = gen.unet.eval()
    if mid_prompt:  # trained weights are not zero; at init the projection is a no-op
        torch.nn.init.normal_(gen.mid_prompt.proj.weight)
    x = torch.randn(1, 48 + 4, 8, 8)
    states = torch.randn(2, 6, 384)
    torch.manual_seed(0)
    with torch.no_grad():
        free = unet(x.repeat(2, 1, 1, 1), torch.tensor([500, 500]), states).sample
        hook = unet.mid_block.register_forward_hook(lambda m, a, out: torch.randn(out[:1].shape).repeat(2, 1, 1, 1))
        try:
            pinned = unet(x.repeat(2, 1, 1, 1), torch.tensor([500, 500]), states).sample
        finally:
            hook.remove()
    assert (free[0] - free[1]).abs().max() > 1e-4  # the prompt matters ...
    only_through_h = torch.allclose(pinned[0], pinned[1], atol=1e-6)
    assert only_through_h == (text_at == "bottleneck")  # ... with text at the bottleneck only through h


def test_mid_prompt_starts_as_a_no_op_round_trips_and_follows_the_prompt(tmp_path):
    import copy

    from backends.shapes.train_generator import TEXT_AT

    down, up = TEXT_AT["bottleneck"](2)
    cfg = tiny_config(down_block_types=down, up_block_types=up, pooled_conditioning=False, mid_prompt=True)
    gen = G.build_generator(cfg, seed=0)
    plain = G.build_generator(tiny_config(down_block_types=down, up_block_types=up, pooled_conditioning=False), seed=0)
    x, t, states = torch.randn(2, 52, 8, 8), torch.tensor([300, 300]), torch.randn(2, 6, 384)
    with torch.no_grad():
        assert torch.allclose(gen.unet(x, t, states).sample, plain.unet(x, t, states).sample)  # zero init
        torch.nn.init.normal_(gen.mid_prompt.proj.weight)
        edited = gen.unet(x, t, states).sample
    assert not torch.allclose(edited, plain.unet(x, t, states).sample)
    # padding tokens (mask 0) do not change the pooled vector
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    junk = states.clone()
    junk[:, 3:] = 99.0
    with torch.no_grad():
        a = gen.unet(x, t, states, encoder_attention_mask=mask).sample
        b = gen.unet(x, t, junk, encoder_attention_mask=mask).sample
    assert torch.allclose(a, b, atol=1e-5)
    # the EMA copy owns its own projection (training averages into it, not into the live model's)
    ema = copy.deepcopy(gen)
    with torch.no_grad():
        ema.mid_prompt.proj.weight.zero_()
        assert torch.allclose(ema.unet(x, t, states).sample, plain.unet(x, t, states).sample)
        assert torch.allclose(gen.unet(x, t, states).sample, edited)
    G.save_generator(gen, tmp_path / "g.safetensors")
    back = G.load_generator(tmp_path / "g.safetensors")
    assert back.config.mid_prompt and back.mid_prompt is not None
    with torch.no_grad():
        assert torch.allclose(back.unet(x, t, states).sample, edited, atol=5e-2)  # fp16 weights


def test_without_coarse_skips_the_decoder_reads_the_coarsest_level_only_from_h():
    from backends.shapes.train_generator import TEXT_AT

    down, up = TEXT_AT["bottleneck"](2)
    base = dict(down_block_types=down, up_block_types=up, pooled_conditioning=False)
    cut = G.build_generator(tiny_config(**base, coarse_skips=False), seed=0)
    full = G.build_generator(tiny_config(**base), seed=0)
    assert G.GeneratorConfig.from_json(cut.config.to_json()).coarse_skips is False
    seen, mid_in = [], []
    cut.unet.up_blocks[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["res_hidden_states_tuple"]), with_kwargs=True)
    for g in (cut, full):
        g.unet.mid_block.register_forward_pre_hook(lambda m, a: mid_in.append(a[0]))
    x, t, states = torch.randn(1, 52, 8, 8), torch.tensor([500]), torch.randn(1, 6, 384)
    with torch.no_grad():
        out = cut.unet(x, t, states).sample
        assert all(float(r.abs().max()) == 0 for r in seen[0])  # the 4x4 skips carry nothing
        assert not torch.allclose(out, full.unet(x, t, states).sample)  # same weights, skips cut
    assert torch.equal(mid_in[0], mid_in[1])  # the down path into the mid block is untouched


def test_shape_weight_draws_scenes_naming_that_shape_more_often():
    """--shape-weight square=2: scenes whose caption names a square by any of its words are drawn twice
    as often as the rest; other scenes keep equal chances; a bad item is refused by name."""
    from backends.shapes.train_generator import parse_shape_weights, shape_draw_weights

    caps = np.array(["a red square", "a blue circle", "two boxes and a star", "a large green block",
                     "a star and a circle", "a boxing ring"])
    p = shape_draw_weights(caps, parse_shape_weights(["square=2"]))
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == p[2] == p[3] == pytest.approx(2 * p[1])
    assert p[1] == p[4] == p[5]  # "boxing" is not a box
    assert shape_draw_weights(caps, {}) is None
    for bad, says in [("squre=2", "one of"), ("square=big", "a number"), ("square=0", "above 0")]:
        with pytest.raises(SystemExit, match=says):
            parse_shape_weights([bad])


def test_small_weight_draws_small_one_object_scenes_of_that_shape_more_often():
    """--small-weight square=3 on top of --shape-weight square=2: a one-object scene of a small square
    (area under the small/medium midpoint, measured on rendered scenes) is drawn 3 x 2 times as often
    as an unweighted scene; a medium square or a small square among other objects only twice."""
    from backends.shapes import scenes
    from backends.shapes.train_generator import shape_draw_weights, small_area

    def area(shape, size):
        img, masks = scenes.render(scenes.SceneSpec([scenes.ObjectSpec(shape, "red", size, 0.5, 0.5, 20.0)]), 128)
        return float(masks[0].mean())

    for shape in scenes.SHAPES:  # the threshold lies between the two sizes as rendered
        assert area(shape, "small") < small_area(shape) < area(shape, "medium"), shape
    caps = np.array(["a small red square", "a medium red square", "a small red square and a star", "a small circle"])
    areas = np.array([area("square", "small"), area("square", "medium"), area("square", "small"), area("circle", "small")])
    single = np.array([True, True, False, True])
    p = shape_draw_weights(caps, {"square": 2.0}, small={"square": 3.0}, areas=areas, single=single)
    assert p[0] == pytest.approx(6 * p[3]) and p[1] == pytest.approx(2 * p[3]) and p[2] == pytest.approx(2 * p[3])
    with pytest.raises(ValueError, match="areas"):
        shape_draw_weights(caps, {}, small={"square": 3.0})


def test_the_accuracy_curve_keeps_each_evaluation_and_its_geometric_reading(tmp_path):
    """eval_curve reads the run's JSONL log: one point per successful eval event, in order, with the
    judge's and the geometric scorer's readings; training lines, failed evals and torn lines are skipped."""
    import json

    from backends.shapes.train_generator import eval_curve

    log = tmp_path / "log.jsonl"
    lines = [{"step": 1000, "loss": 0.1},
             {"step": 2000, "event": "eval", "joint": 0.5, "per_shape": {"square": 0.4}, "geometric": {"joint": 0.45}},
             {"step": 4000, "event": "eval", "eval_error": "out of memory"},
             {"step": 6000, "event": "eval", "joint": 0.7, "per_shape": {"square": 0.6}}]
    log.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 7000, "ev')
    curve = eval_curve(log)
    assert [c["step"] for c in curve] == [2000, 6000]
    assert curve[0]["geometric"] == {"joint": 0.45} and "geometric" not in curve[1] and curve[1]["joint"] == 0.7
    assert eval_curve(tmp_path / "missing.jsonl") == []


def test_the_training_command_prints_its_help(capsys):
    """`python -m backends.shapes.train generator --help` (argparse formats every flag's help with %)."""
    from backends.shapes import train_generator

    with pytest.raises(SystemExit) as e:
        train_generator.main(["--help"])
    assert e.value.code == 0 and "--swap-pairs" in capsys.readouterr().out
