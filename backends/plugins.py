"""Plug-ins: the models and worlds that generic code reaches by name.

Generic code (pipelines, h-space, directions, regions, clustering, names, stitching) never imports
a particular world's modules; it asks these registries, the way diffusers looks pipelines up by
name and open_clip looks up model configs:

    get_generator("shapes").load_pipeline(device="cpu")     # a LatentDiffusionPipeline
    get_encoder_family("shapes").load("shapes-cnn")         # an image encoder (encode_images/texts)
    get_text_encoder("minilm")                              # token states + pooled vectors
    get_evaluator("shapes")                                 # a factor judge, or None
    get_vocabulary("shapes")()                              # candidate cluster descriptions
    get_prompt_set("shapes")(n, seed=0)                     # (prompts, factors asked for)
    get_surrogate("shapes")                                 # failure-search judge + prompt families

A plug-in registers its entries when its module is imported (``register_generator(...)`` …).
The built-in plug-ins are imported on the first lookup; this module is the one place outside
``backends/shapes/`` that names the embedded Shapes world (the default plug-in). Corpora register
with ``backends.corpora.corpus.register_corpus`` and stitching spaces with
``backends.representations.stitching.register_space``; both load these plug-ins first too.
"""
from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backends.errors import InputError

# The built-in plug-ins, imported lazily (module names, so importing this module stays cheap).
BUILTIN_PLUGINS: tuple[str, ...] = ("backends.shapes.plugin",)
DEFAULT_WORLD = "shapes"

_LOCK = threading.RLock()
_LOADED = False


def load_builtin_plugins() -> None:
    """Import the built-in plug-ins once (each registers its entries on import)."""
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        _LOADED = True
        for mod in BUILTIN_PLUGINS:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as exc:  # a plug-in left out of an install: skip it
                if exc.name != mod:
                    raise


class Registry:
    """name -> entry, with a clear message for unknown names."""

    def __init__(self, what: str):
        self.what = what
        self._d: dict[str, Any] = {}

    def register(self, name: str, entry: Any) -> Any:
        with _LOCK:
            self._d[name] = entry
        return entry

    def get(self, name: str, default: Any = ...) -> Any:
        load_builtin_plugins()
        with _LOCK:
            if name in self._d:
                return self._d[name]
        if default is not ...:
            return default
        raise InputError(f"Unknown {self.what}: {name!r}. Must be one of: {', '.join(sorted(self._d)) or '(none)'}")

    def names(self) -> list[str]:
        load_builtin_plugins()
        with _LOCK:
            return list(self._d)


@dataclass
class GeneratorPlugin:
    """A generator a world ships: how to load its pipeline and what it is meant to be sampled with.

    load_pipeline(device) -> LatentDiffusionPipeline; available() -> None or why it cannot load;
    defaults() -> dict with steps, guidance_scale, region_guidance_scale, guidance_methods (default
    first), directions_record_half, directions_delta_half (read from configs, no weights loaded);
    fingerprint() -> a string that changes when the weights do (cache keys);
    tiny(seed, spatext_channels, image_size) -> a tiny random pipeline of the same kind (tests)."""

    name: str
    load_pipeline: Callable[..., Any]
    defaults: Callable[[], dict]
    available: Callable[[], str | None] = lambda: None
    fingerprint: Callable[[], str] = lambda: ""
    tiny: Callable[..., Any] | None = None


@dataclass
class EncoderFamily:
    """Image encoders a world ships: names, a cheap availability check, and a loader."""

    name: str
    names: Callable[[], list[str]]
    load: Callable[..., Any]
    unavailable: Callable[[str], str | None] = lambda name: None
    extra: dict = field(default_factory=dict)


GENERATORS = Registry("generator")
ENCODER_FAMILIES = Registry("image encoder family")
TEXT_ENCODERS = Registry("text encoder")
EVALUATORS = Registry("evaluator")
VOCABULARIES = Registry("vocabulary")
PROMPT_SETS = Registry("prompt set")
SURROGATES = Registry("failure-search surrogate")
REGION_PLANNERS = Registry("region planner")
PROMPT_LAYOUTS = Registry("prompt layout")
EDIT_CHECKS = Registry("edit check")


def register_generator(plugin: GeneratorPlugin) -> GeneratorPlugin:
    return GENERATORS.register(plugin.name, plugin)


def get_generator(name: str = DEFAULT_WORLD) -> GeneratorPlugin:
    return GENERATORS.get(name)


def register_encoder_family(family: EncoderFamily) -> EncoderFamily:
    return ENCODER_FAMILIES.register(family.name, family)


def get_encoder_family(name: str = DEFAULT_WORLD) -> EncoderFamily:
    return ENCODER_FAMILIES.get(name)


def register_text_encoder(name: str, loader: Callable[..., Any]) -> None:
    """loader(device="cpu") -> an object with encode_tokens(texts, max_len) and encode_pooled(texts)."""
    TEXT_ENCODERS.register(name, loader)


def get_text_encoder(name: str = "minilm", device: str = "cpu"):
    return TEXT_ENCODERS.get(name)(device=device)


def register_evaluator(name: str, loader: Callable[[], Any]) -> None:
    """loader() -> a factor judge (predict(images) -> DataFrame of factors; predict_objects(image,
    masks)) or None when its weights are missing. Used for evaluation and naming, never to steer."""
    EVALUATORS.register(name, loader)


def get_evaluator(name: str = DEFAULT_WORLD):
    """The named factor judge, or None (no such evaluator, or its weights are missing)."""
    loader = EVALUATORS.get(name, None)
    return None if loader is None else loader()


def register_vocabulary(name: str, candidates: Callable[[], list]) -> None:
    """candidates() -> [backends.clusters.names.Candidate] describing the world's factors."""
    VOCABULARIES.register(name, candidates)


def get_vocabulary(name: str = DEFAULT_WORLD) -> Callable[[], list]:
    return VOCABULARIES.get(name)


def register_prompt_set(name: str, prompts: Callable[..., Any]) -> None:
    """prompts(n, seed=0, split="test") -> (list of prompts, DataFrame of the factors each asks for)."""
    PROMPT_SETS.register(name, prompts)


def get_prompt_set(name: str = DEFAULT_WORLD) -> Callable[..., Any]:
    return PROMPT_SETS.get(name)


@dataclass
class SurrogatePlugin:
    """A world's failure-search surrogate (backends/generative/failure_search.py): load() -> an object
    with score(images, asked) -> Scores, or None when its weights are missing; families() -> {name:
    PromptFamily} (no weights loaded)."""

    name: str
    load: Callable[[], Any]
    families: Callable[[], dict]


def register_surrogate(plugin: SurrogatePlugin) -> SurrogatePlugin:
    return SURROGATES.register(plugin.name, plugin)


def get_surrogate(name: str = DEFAULT_WORLD) -> SurrogatePlugin | None:
    """The named world's failure-search surrogate plug-in, or None."""
    return SURROGATES.get(name, None)


def register_region_planner(name: str, planner: Callable[..., Any]) -> None:
    """planner(masks (R, H, W), prompts, model_size=...) -> (float maps (R, H, W), notes): a world's
    object planner for painted regions (each area turned into what its prompt names, fitted inside)."""
    REGION_PLANNERS.register(name, planner)


def get_region_planner(name: str = DEFAULT_WORLD) -> Callable[..., Any] | None:
    """The named world's region planner, or None (the painted areas are used as they are)."""
    return REGION_PLANNERS.get(name, None)


def register_prompt_layout(name: str, layout: Callable[..., Any]) -> None:
    """layout(prompt, size) -> an object with maps (R, size, size), phrases, global_prompt and notes, or
    None when the prompt names fewer than two objects: a world's way to draw several objects from one
    prompt through its region map."""
    PROMPT_LAYOUTS.register(name, layout)


def get_prompt_layout(name: str = DEFAULT_WORLD) -> Callable[..., Any] | None:
    """The named world's prompt layout, or None."""
    return PROMPT_LAYOUTS.get(name, None)


def register_edit_check(name: str, check: Callable[..., Any]) -> None:
    """check(source (H, W, 3), frames (K, H, W, 3)) -> bool (K,): which edited frames no longer show a
    proper scene of the world (the Directions strip keeps its default range below them)."""
    EDIT_CHECKS.register(name, check)


def get_edit_check(name: str = DEFAULT_WORLD) -> Callable[..., Any] | None:
    """The named world's check for broken edited frames, or None (no frame counts as broken)."""
    return EDIT_CHECKS.get(name, None)


__all__ = [
    "BUILTIN_PLUGINS", "DEFAULT_WORLD", "EncoderFamily", "GeneratorPlugin", "Registry", "get_encoder_family",
    "SurrogatePlugin", "get_evaluator", "get_generator", "get_prompt_set", "get_surrogate", "get_text_encoder",
    "get_vocabulary", "load_builtin_plugins", "get_region_planner", "register_region_planner",
    "get_prompt_layout", "register_prompt_layout", "get_edit_check", "register_edit_check",
    "register_encoder_family", "register_evaluator", "register_generator", "register_prompt_set",
    "register_surrogate", "register_text_encoder", "register_vocabulary",
]
