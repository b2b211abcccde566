"""The Shapes world as a plug-in: registers its generator, image encoders, MiniLM text encoder,
factor judge, cluster-name vocabulary, prompt set, corpus and stitching spaces with the generic
registries (``backends.plugins``, ``backends.corpora.corpus``, ``backends.representations.stitching``).

Imported by ``backends.plugins.load_builtin_plugins``; nothing outside ``backends/shapes/`` imports
this world's modules directly.
"""
from __future__ import annotations

from backends import plugins
from backends.errors import InputError


# -- generator ------------------------------------------------------------------------------
def _available() -> str | None:
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        return (f"the Shapes generator is not trained yet ({WEIGHTS.name} is missing); "
                "train it with `python -m backends.shapes.train generator`")
    return None


def _load_pipeline(device: str = "cpu", path=None):
    from backends.shapes.pipeline import load_shapes_pipeline

    why = _available() if path is None else None
    if why:
        raise InputError(why)
    try:
        return load_shapes_pipeline(device=device, path=path)
    except FileNotFoundError as exc:
        raise InputError(f"the Shapes generator is not available: {exc}") from None


def _defaults() -> dict:
    """Sampling defaults from the shipped config (no weights loaded)."""
    from backends.shapes.generator import guide_path, shipped_config

    c = shipped_config()
    methods = ["cfg"]
    if guide_path() is not None:
        methods = ["auto", "cfg"] if c.guidance_method == "auto" else ["cfg", "auto"]
    return {"steps": c.num_inference_steps, "guidance_scale": c.guidance_scale,
            "region_guidance_scale": c.region_guidance_scale or c.guidance_scale, "guidance_methods": methods,
            "directions_record_half": c.directions_record_half, "directions_delta_half": c.directions_delta_half,
            "eta": c.eta,
            # how each region method did on user-like painted layouts (regions_eval --record), per method
            "region_methods": dict((c.metrics or {}).get("regions_user", {}).get("methods", {})),
            # what the Directions tab's supervised directions did on this model (supervised_eval --record)
            "supervised_directions": dict((c.metrics or {}).get("supervised_directions", {}).get("directions", {}))}


def _fingerprint() -> str:
    from backends.shapes.generator import WEIGHTS

    st = WEIGHTS.stat() if WEIGHTS.exists() else None
    return "" if st is None else f"{st.st_size}-{int(st.st_mtime)}"


def tiny_random_pipeline(seed: int = 0, spatext_channels: int = 4, image_size: int = 64):
    """A tiny random Shapes-style pipeline (64x64 images; milliseconds per step) for tests."""
    from backends.generative.pipeline import LatentDiffusionPipeline
    from backends.generative.regions import HashTextEncoder
    from backends.shapes.generator import GeneratorConfig, build_generator

    cfg = GeneratorConfig(image_size=image_size, patch=4,
                          block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                          head_dim=8, norm_num_groups=4, spatext_channels=spatext_channels, max_tokens=16)
    gen = build_generator(cfg, seed=seed)
    gen.unet.eval()
    return LatentDiffusionPipeline(gen.unet, gen.make_scheduler(), gen.codec, HashTextEncoder(),
                                   gen.spatext if spatext_channels else None, max_tokens=cfg.max_tokens)


plugins.register_generator(plugins.GeneratorPlugin(
    name="shapes", load_pipeline=_load_pipeline, defaults=_defaults, available=_available,
    fingerprint=_fingerprint, tiny=tiny_random_pipeline))


# -- encoders -------------------------------------------------------------------------------
def _encoder_names() -> list[str]:
    from backends.shapes.encoders import available_encoders

    return list(available_encoders())


def _load_encoder(name: str, device: str = "cpu"):
    from backends.shapes.encoders import load_image_encoder

    return load_image_encoder(name)


def _encoder_unavailable(name: str) -> str | None:
    from backends.shapes.encoders import weights_path

    p = weights_path(name)
    if not p.exists() or not p.with_suffix(".json").exists():
        return f"no weights at {p} (train them with: python -m backends.shapes.train encoders)"
    return None


plugins.register_encoder_family(plugins.EncoderFamily(
    name="shapes", names=_encoder_names, load=_load_encoder, unavailable=_encoder_unavailable))


def _minilm(device: str = "cpu"):
    from backends.shapes.text import get_text_encoder

    return get_text_encoder(device)


plugins.register_text_encoder("minilm", _minilm)


# -- evaluation, vocabulary, prompts --------------------------------------------------------
def _judge():
    """The Shapes judge, or None when its weights are missing or unreadable."""
    from backends.shapes.judge import WEIGHTS, load_judge

    if not WEIGHTS.exists():
        return None
    try:
        return load_judge()
    except Exception:  # an incompatible or half-written file: directions still work, unnamed
        return None


plugins.register_evaluator("shapes", _judge)


def shapes_candidates() -> list:
    """Descriptions built from the Shapes vocabulary, each tagged with the factors it names."""
    from backends.clusters.names import Candidate
    from backends.shapes import scenes as S

    def a(word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    out: list = []
    for colour in S.COLOURS:
        out.append(Candidate(f"{colour} shapes", ("colour",)))
        out.append(Candidate(f"{colour} objects", ("colour",)))
    for shape in S.SHAPES:
        out.append(Candidate(S.SHAPE_PLURALS[shape], ("shape",)))
        out.append(Candidate(f"{a(shape)} {shape}", ("shape",)))
    for size in S.SIZES:
        out.append(Candidate(f"{size} shapes", ("size",)))
    for pos in S.POSITIONS:
        out.append(Candidate(f"a shape {S.POSITION_WORDS[pos][0][0]}", ("position",)))
    for bg in S.BACKGROUNDS:
        out.append(Candidate(f"a shape on a {bg} background", ("background",)))
    for colour in S.COLOURS:
        for shape in S.SHAPES:
            out.append(Candidate(f"{a(colour)} {colour} {shape}", ("colour", "shape")))
            out.append(Candidate(f"{colour} {S.SHAPE_PLURALS[shape]}", ("colour", "shape")))
    for size in S.SIZES:
        for colour in S.COLOURS:
            out.append(Candidate(f"{size} {colour} shapes", ("size", "colour")))
        for shape in S.SHAPES:
            out.append(Candidate(f"{size} {S.SHAPE_PLURALS[shape]}", ("size", "shape")))
    return out


plugins.register_vocabulary("shapes", shapes_candidates)


def shapes_prompts(n: int, seed: int = 0, split: str = "test"):
    """n single-object Shapes captions and their factors (what each prompt asks for)."""
    from backends.shapes import scenes

    b = scenes.make_batch(n, seed=seed, split=split, size=16, single=True)
    f = b.factors[["shape", "colour", "size", "position"]].reset_index(drop=True)
    return list(b.captions), f


plugins.register_prompt_set("shapes", shapes_prompts)


def _surrogate():
    from backends.shapes.failures import load_surrogate

    return load_surrogate()


def _failure_families() -> dict:
    from backends.shapes.failures import families

    return families()


plugins.register_surrogate(plugins.SurrogatePlugin("shapes", load=_surrogate, families=_failure_families))


def _plan_regions(masks, prompts, *, model_size: int = 32):
    from backends.shapes.region_planner import plan_objects

    return plan_objects(masks, prompts, model_size=model_size)


plugins.register_region_planner("shapes", _plan_regions)


def _layout_prompt(prompt: str, size: int = 32):
    from backends.shapes.prompt_layout import layout_from_prompt

    return layout_from_prompt(prompt, size)


plugins.register_prompt_layout("shapes", _layout_prompt)


# -- corpus and stitching spaces (registered by importing their modules) ---------------------
from backends.shapes import corpus as _corpus  # noqa: E402,F401  registers the "shapes" corpus
from backends.shapes import spaces as _spaces  # noqa: E402,F401  registers the Shapes world's spaces


def _broken_frames(source, frames):
    from backends.shapes.edit_checks import broken_frames

    return broken_frames(source, frames)


plugins.register_edit_check("shapes", _broken_frames)
