"""What the Generate tab does: the active text-to-image generator (Shapes by default) at work.

``GenerateService`` takes plain values and returns an image (uint8 H×W×3) and notes;
app/tabs/generate.py lays it out and wires it to Gradio. Prompt, negative prompt, seed, steps,
guidance (scale and method) → image. Out-of-range numbers are clamped and the clamp is reported
in the notes; what the pipeline cut (a very long prompt) is too. The method is the model's default
unless chosen: autoguidance for the Shapes model (it has a guide model), classifier-free guidance
otherwise and whenever a negative prompt is given.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import numpy as np

from backends.errors import InputError
from backends.gpu import gpu_task
from backends.registry import Backends

STEPS_RANGE = (1, 100)
GUIDANCE_RANGE = (0.0, 20.0)
SEED_RANGE = (0, 2**32 - 1)
MAX_PROMPT_CHARS = 10_000  # longer requests are refused before any work
# UI / API names of the pipeline's guidance methods ("" or "default": the model's own)
METHOD_LABELS = {"autoguidance": "auto", "classifier-free": "cfg"}
CACHE_SIZE = 64  # recent requests answered without sampling again
FAILURE_BUDGET_RANGE = (4, 400)  # generated images one failure search may spend
FAILURE_KINDS = {"latent": "latent", "prompt": "prompt", "token-gradient": "token-gradient",
                 "latent-gradient": "latent-gradient", "random": "random"}
GRADIENT_STEPS_RANGE = (0, 400)  # backward passes one gradient failure search may spend


class GenerateService:
    """What the Generate tab (and its API) does, independent of the layout."""

    def __init__(self, backends: Backends):
        self.b = backends
        self._cache: OrderedDict = OrderedDict()  # request -> (image, notes), least recent first
        self._lock = threading.Lock()

    def pipeline(self):
        """The active generator (--generator; Shapes when the chosen one is not available here)."""
        try:
            return self.b.generator_pipeline()
        except FileNotFoundError as exc:
            raise InputError(str(exc)) from None

    def status(self) -> str:
        """Which generator runs, and why not the one asked for (if so)."""
        lines = [f"Generator: **{self.b.generator_label}**"]
        lines += [f"- {n}" for n in self.b.model_notes()]
        return "\n".join(lines)

    @staticmethod
    def clamp(name: str, value, lo, hi, cast) -> tuple[object, str | None]:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a number, but is {value!r}") from None
        if not math.isfinite(v):
            raise InputError(f"{name} must be a finite number, but is {value!r}")
        c = cast(min(max(v, lo), hi))
        return c, (f"{name} {value!r} is outside {lo}..{hi}; used {c}" if c != cast(v) or v != c else None)

    def method_choices(self) -> list[str]:
        """The guidance methods the active generator offers (UI labels), its default first; read
        from its config, no weights loaded."""
        label = {v: k for k, v in METHOD_LABELS.items()}
        return [label[m] for m in self.b.generator_defaults()["guidance_methods"]]

    @staticmethod
    def method(label) -> str | None:
        """A UI / API method name -> the pipeline's (None: the model's default)."""
        if label is None or (isinstance(label, str) and label.strip().lower() in ("", "default")):
            return None
        key = str(label).strip().lower()
        if key in METHOD_LABELS:
            return METHOD_LABELS[key]
        if key in METHOD_LABELS.values():
            return key
        raise InputError(f"guidance method must be one of {', '.join(METHOD_LABELS)} (or empty for the model's "
                         f"default), but is {label!r}")

    def generate(self, prompt: str, negative_prompt: str = "", seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, method: str = "", progress=None,
                 layout: bool = True) -> tuple[np.ndarray, list[str]]:
        """One image (uint8 H×W×3) and the notes about what was clamped or cut. steps / guidance
        None: what the active generator is meant to be sampled with (Shapes: 20 / 3.5). The same
        request (after clamping) is answered from a small cache: sampling is seeded, so it would
        give the same image. progress(fraction, text): told while the model loads and at each step.
        layout: a prompt that names several objects is laid out first where the generator's world
        can (Shapes: each object in its own area of the region map; the notes say where)."""
        if steps is None or guidance is None:
            d = self.b.generator_defaults()
            d_steps, d_guidance = d["steps"], d["guidance_scale"]
            steps = d_steps if steps is None else steps
            guidance = d_guidance if guidance is None else guidance

        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("prompt is empty: describe the image, e.g. 'a small red circle in the top left'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(f"prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        notes = []
        steps, n1 = self.clamp("steps", steps, *STEPS_RANGE, int)
        guidance, n2 = self.clamp("guidance", guidance, *GUIDANCE_RANGE, float)
        seed, n3 = self.clamp("seed", seed, *SEED_RANGE, int)
        notes += [n for n in (n1, n2, n3) if n]
        method = self.method(method)
        if not isinstance(layout, (bool, np.bool_)):
            raise InputError(f"layout must be true or false, but is {layout!r}")
        key = (self.b.generator_label, prompt, negative_prompt or "", seed, steps, guidance, method, bool(layout))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        fresh = hit is None
        if fresh:
            hit = self._sample(prompt, negative_prompt, seed, steps, guidance, method, progress, bool(layout))
            with self._lock:
                self._cache[key] = hit
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        image, sample_notes = hit
        if not fresh:
            sample_notes = sample_notes[:-1] + [sample_notes[-1] + " (computed earlier: from the cache)"]
        return image.copy(), notes + list(sample_notes)

    @gpu_task(duration=60)
    def _sample(self, prompt, negative_prompt, seed, steps, guidance, method, progress=None, layout=True):
        import torch

        from backends.generative.pipeline import to_uint8

        tell = progress or (lambda fraction, text: None)
        tell(0.0, "loading the generator")  # the first request loads the weights and the text encoder
        pipe = self.pipeline()
        tell(0.05, "encoding the prompt")

        def on_step(_pipe, i, _t, _state):
            tell(0.05 + 0.95 * (i + 1) / steps, f"denoising step {i + 1}/{steps}")
            return {}

        t0 = time.perf_counter()
        plan = self._layout(prompt, pipe) if layout else None
        regions = {} if plan is None else dict(region_masks=plan.maps, region_prompts=plan.phrases)
        switched = plan is not None and method == "auto"
        if plan is not None and method in (None, "auto"):
            method = "cfg"  # the pipeline's autoguidance is for prompt-only generation
        try:
            out = pipe(prompt if plan is None else plan.global_prompt, negative_prompt=negative_prompt or None,
                       guidance_scale=guidance, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(seed), guidance_method=method,
                       callback_on_step_end=on_step, **regions)
        except ValueError as exc:  # the pipeline's check_inputs names the argument
            raise InputError(str(exc)) from None
        seconds = time.perf_counter() - t0
        label = {v: k for k, v in METHOD_LABELS.items()}[out.guidance_method]
        notes = ([] if plan is None else list(plan.notes)) + list(out.notes)
        if switched:
            notes.append("autoguidance is for prompt-only generation: the laid-out objects used classifier-free guidance")
        notes.append(f"{steps} DDIM steps, {label} guidance {guidance:g}, in {seconds:.2f} s")
        return to_uint8(out.images)[0], notes

    def _layout(self, prompt: str, pipe):
        """The prompt laid out on the generator's region map (several objects named and the world can),
        else None: drawn from the words alone."""
        lay = self.b.prompt_layout()
        if lay is None or getattr(pipe, "spatext", None) is None:
            return None
        return lay(prompt, int(pipe.latent_size * pipe.codec.patch))

    def failure_families(self) -> list[str]:
        """The prompt families the failure search offers on the active generator (no weights loaded)."""
        from backends.generative.surrogates import surrogate_for

        return list(surrogate_for(self.b)[0])

    @gpu_task(duration=180)
    def _search(self, family, load_surrogate, budget: int, kind: str, seed: int, steps, tell, gradient_steps=None):
        """The generator calls of a failure search (on a ZeroGPU Space, inside its GPU allocation)."""
        from backends.generative.failure_gradient import GRADIENT_KINDS
        from backends.generative.failure_search import search_failures
        from backends.generative.surrogates import PipelineGenerator

        tell(0.0, "loading the generator and the judge")
        gen = PipelineGenerator(self.pipeline(), steps=steps)
        extra = {"grad_steps": gradient_steps} if kind in GRADIENT_KINDS else {}
        return search_failures(gen, load_surrogate(), family, budget=budget, kind=kind, seed=seed,
                               progress=lambda f, text: tell(0.02 + 0.93 * f, text), **extra)

    def failure_search(self, family: str = "", budget=60, kind: str = "latent", seed=0, steps=None,
                       progress=None, gradient_steps=None) -> tuple[dict, list]:
        """Search the active generator for failures (backends/generative/failure_search.py, after SAGE)
        and register them as an Atlas corpus "failures: <family>", stored under the cache dir with the
        uploads (listed again after a restart, removable). Returns (summary: family, kind, budget, used,
        gradient_steps, failures, failure_rate, corpus (its key, or None under 2 failures), corpus_name,
        rows, notes; the failures' images). budget, steps and gradient_steps (the gradient searches'
        backward passes; None: as many as the budget allows) out of range are clamped and noted."""
        from backends.generative.failure_search import failures_corpus
        from backends.generative.surrogates import surrogate_for

        tell = progress or (lambda fraction, text: None)
        families, load = surrogate_for(self.b)
        family = (family or "").strip() or next(iter(families))
        if family not in families:
            raise InputError(f"family must be one of {', '.join(repr(f) for f in families)}, but is {family!r}")
        key = str(kind or "latent").strip().lower()
        if key not in FAILURE_KINDS:
            raise InputError(f"search kind must be one of {', '.join(FAILURE_KINDS)}, but is {kind!r}")
        notes = []
        budget, n1 = self.clamp("budget", budget, *FAILURE_BUDGET_RANGE, int)
        seed, n2 = self.clamp("seed", seed, *SEED_RANGE, int)
        n3 = None
        if steps is not None:
            steps, n3 = self.clamp("steps", steps, *STEPS_RANGE, int)
        n4 = None
        if gradient_steps is not None:
            gradient_steps, n4 = self.clamp("gradient_steps", gradient_steps, *GRADIENT_STEPS_RANGE, int)
        notes += [n for n in (n1, n2, n3, n4) if n]
        result = self._search(families[family], load, budget, FAILURE_KINDS[key], seed, steps, tell, gradient_steps)
        tell(0.96, "clustering the failures")
        corpus = failures_corpus(result, seed=seed)
        corpus_key = None
        if corpus is not None:
            corpus_key, why = self.b.keep_corpus(corpus, f"{corpus.name} ({result.kind} search, seed {seed})")
            if why:
                notes.append(why)
        fails = result.failures
        clusters = corpus.meta["cluster"].tolist() if corpus is not None else [""] * len(fails)
        rows = [{"prompt": t.prompt, "asked": " ".join(t.asked.values()), "drawn": t.drawn,
                 "agreement": round(t.agreement, 3), "cluster": c, "seed": t.seed,
                 "lineage": ">".join(str(s) for s in t.lineage)} for t, c in zip(fails, clusters)]
        notes += result.notes
        notes.append(f"in the Atlas as {corpus.name!r} ({len(corpus)} items)" if corpus is not None
                     else "fewer than 2 failures: no Atlas corpus")
        summary = {"family": family, "kind": result.kind, "budget": budget, "used": result.used,
                   "gradient_steps": result.gradient_steps, "failures": len(fails),
                   "failure_rate": round(result.failure_rate, 4), "corpus": corpus_key,
                   "corpus_name": corpus.name if corpus is not None else None, "rows": rows, "notes": notes}
        return summary, [t.image for t in fails]
