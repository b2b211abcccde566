"""Failure search (after SAGE, Liu et al., "Discovering failure modes of text-guided diffusion
models via adversarial search"): look for prompts and initial noises where a generator does not draw
what it was asked, under a budget of generated images, with a surrogate judging each image.

    family = PromptFamily("a {colour} {shape}", {"colour": {"red": ["red"], ...}, "shape": {...}})
    result = search_failures(generator, surrogate, family, budget=60, kind="latent", seed=0)
    result.failure_rate, result.failures        # share of the budget that failed; the failing trials
    corpus = failures_corpus(result)            # an Atlas corpus: prompt, asked, drawn, cluster, seed

- generator(prompts, latents (N, *latent_shape) float32, seeds) -> uint8 images (N, H, W, 3), with a
  ``latent_shape`` attribute (``PipelineGenerator`` adapts a LatentDiffusionPipeline; the seeds fix
  the sampler's own noise, so a trial is reproducible from its latent and seed).
- surrogate.score(images, asked: list[dict]) -> ``Scores``: agreement in [0, 1] (soft: what the
  search minimises), what was drawn, whether it failed, and features (for clustering). The Shapes
  world's is its factor judge (registered with backends.plugins.register_surrogate); real models use
  an image encoder's text-image similarity (backends/generative/surrogates.py).

Kinds (each spends exactly `budget` images): "random" samples the family as a user would (random
factors, canonical wording, fresh noise): the baseline. "latent" is SAGE's latent search without
gradients: an evolution over initial noises, children z' = sqrt(1 - s^2) z + s e (still exactly
N(0, I): the constraint that keeps latents natural, not outliers), parents the lowest-agreement
trials so far. "prompt" is its prompt search over natural rewordings: a template of the family, a
prefix, a filler adjective and a suffix, each from a vocabulary that never names a factor, so the
asked words never change and the meaning stays the same for a person; each candidate gets fresh noise.
"token-gradient" and "latent-gradient" are SAGE's gradient searches (backends/generative/failure_gradient.py):
learnable tokens appended to the prompt's token states, or the initial noise within a norm ball,
stepped down the surrogate's differentiable score through the whole sampler; they need
generator.sample_differentiable / token_space and surrogate.log_agreement, and also spend exactly
`budget` images (plus at most `grad_steps` backward passes).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from backends.errors import InputError

KINDS = ("random", "latent", "prompt", "token-gradient", "latent-gradient")
MAX_BUDGET = 2000
# wording vocabularies of the prompt search: none names a shape, colour, size, position or object
PREFIXES = ("", "a picture of", "an image of", "there is", "please draw", "here is", "a drawing of")
FILLERS = ("", "nice", "simple", "plain", "flat", "neat", "clean", "lovely")
SUFFIXES = ("", ", please", ", drawn simply", " in a picture", ", nothing else", ", thanks")


@dataclass
class PromptFamily:
    """Prompts from one template with factor slots: "a {colour} {shape}".

    slots: factor -> {value: [words a person may use for it]} (the first word is the canonical one).
    templates: the wordings the prompt search may use (the first is the family's own), all with the
    same slots. Every slot word is protected: the prompt search only adds or moves other words."""

    name: str
    slots: dict[str, dict[str, list[str]]]
    templates: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = PREFIXES
    fillers: tuple[str, ...] = FILLERS
    suffixes: tuple[str, ...] = SUFFIXES
    distinct: tuple[tuple[str, ...], ...] = ()  # groups of slots that must differ ("shape", "shape2")

    def __post_init__(self):
        self.templates = tuple(self.templates) or (self.name,)
        want = set(self.slots)
        for t in self.templates:
            got = set(re.findall(r"{(\w+)}", t))
            if got != want:
                raise ValueError(f"template {t!r} has slots {sorted(got)}, but the family's are {sorted(want)}")
        words = self.factor_words()
        for w in self.prefixes + self.fillers + self.suffixes:
            hit = [x for x in words if re.search(rf"\b{re.escape(x)}\b", w)]
            if hit:
                raise ValueError(f"wording {w!r} names a factor word ({hit[0]!r}): it would change the prompt's meaning")

    def factor_words(self) -> set[str]:
        return {w.lower() for vals in self.slots.values() for ws in vals.values() for w in ws}

    def sample_asked(self, rng: np.random.Generator) -> dict[str, str]:
        while True:
            asked = {k: str(rng.choice(sorted(v))) for k, v in self.slots.items()}
            if all(len({asked[k] for k in g}) == len(g) for g in self.distinct):
                return asked

    def render(self, asked: dict[str, str], wording: tuple[int, int, int, int] = (0, 0, 0, 0),
               synonyms: dict[str, int] | None = None) -> str:
        """The prompt for `asked` in a wording (template, prefix, filler, suffix indices); `synonyms`
        picks a word per slot (default: each value's first word)."""
        t, p, f, s = wording
        words = {k: self.slots[k][v][(synonyms or {}).get(k, 0) % len(self.slots[k][v])] for k, v in asked.items()}
        tpl = self.templates[t]
        if self.fillers[f]:
            i = tpl.index("{")
            tpl = tpl[:i] + self.fillers[f] + " " + tpl[i:]
        text = " ".join(x for x in (self.prefixes[p], tpl.format(**words)) if x) + self.suffixes[s]
        return fix_articles(text)

    def wording_sizes(self) -> tuple[int, int, int, int]:
        return len(self.templates), len(self.prefixes), len(self.fillers), len(self.suffixes)


def fix_articles(text: str) -> str:
    """'a orange' -> 'an orange', 'an red' -> 'a red'."""
    return re.sub(r"\b(a|an)\s+(\w)", lambda m: ("an " if m.group(2).lower() in "aeiou" else "a ") + m.group(2), text)


@dataclass
class Scores:
    """What a surrogate read from a batch of images."""

    agreement: np.ndarray  # (N,) in [0, 1]: how well each image shows what was asked
    drawn: list[str]  # what each image shows, in words
    failed: np.ndarray | None = None  # (N,) bool; None: agreement < 0.5
    features: np.ndarray | None = None  # (N, F) float32, for clustering the failures

    def __post_init__(self):
        self.agreement = np.clip(np.asarray(self.agreement, np.float64), 0.0, 1.0)
        self.failed = self.agreement < 0.5 if self.failed is None else np.asarray(self.failed, bool)


@dataclass
class Trial:
    prompt: str
    asked: dict[str, str]
    lineage: tuple[int, ...]  # noise seeds: the first draws z, each later one mutates it (see latent_for)
    wording: tuple[int, int, int, int]
    origin: str  # "random" | "mutant" | "start" (a token search's first image) | "gradient"
    synonyms: dict[str, int] = field(default_factory=dict)  # which word of each slot (paraphrase families)
    steps: int = 0  # gradient steps taken before this image (gradient searches)
    agreement: float = float("nan")
    drawn: str = ""
    failed: bool = False
    image: np.ndarray | None = field(default=None, repr=False)
    features: np.ndarray | None = field(default=None, repr=False)

    @property
    def seed(self) -> int:
        return self.lineage[-1]


@dataclass
class SearchResult:
    kind: str
    family: str
    budget: int
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)
    gradient_steps: int = 0  # backward passes spent (gradient searches)

    @property
    def used(self) -> int:
        return len(self.trials)

    @property
    def failures(self) -> list[Trial]:
        return [t for t in self.trials if t.failed]

    @property
    def failure_rate(self) -> float:
        return len(self.failures) / max(1, len(self.trials))


def latent_for(lineage: Sequence[int], shape: tuple[int, ...], strength: float) -> np.ndarray:
    """The initial noise of a lineage: N(0, I) from its first seed, then each mutation
    z <- sqrt(1 - s^2) z + s e (e from that seed), which keeps z exactly N(0, I)."""
    z = np.random.default_rng(int(lineage[0])).standard_normal(shape).astype(np.float32)
    a = math.sqrt(1.0 - strength ** 2)
    for s in lineage[1:]:
        z = a * z + strength * np.random.default_rng(int(s)).standard_normal(shape).astype(np.float32)
    return z


def check_search_args(kind: str, budget, batch) -> tuple[str, int, int]:
    if kind not in KINDS:
        raise InputError(f"search kind must be one of {', '.join(KINDS)}, but is {kind!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= MAX_BUDGET:
        raise InputError(f"budget must be a whole number of images between 1 and {MAX_BUDGET}, but is {budget!r}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= 64:
        raise InputError(f"batch must be between 1 and 64, but is {batch!r}")
    return kind, int(budget), int(batch)


def search_failures(generator, surrogate, family: PromptFamily, *, budget: int = 60, kind: str = "latent",
                    seed: int = 0, batch: int | None = None, strength: float = 0.5, explore: float = 0.25,
                    elite: int = 8, temperature: float = 0.1, progress: Callable[[float, str], None] | None = None,
                    **gradient) -> SearchResult:
    """Spend exactly `budget` generated images looking for failures (see the module's docstring).

    The first quarter of the budget (at least one batch) is random sampling; then each batch holds
    children of the `elite` lowest-agreement trials so far (a parent's share of the children falls as
    exp(-(its agreement - the lowest) / temperature)) and a share `explore` of fresh random trials. strength: the latent mutation's noise share s (0 < s < 1).
    The gradient kinds take their own settings as keywords (grad_steps, steps_per_start, n_tokens,
    token_radius, latent_radius, step_size: failure_gradient.gradient_search); the others take none."""
    from backends.generative.failure_gradient import GRADIENT_KINDS, gradient_search

    if batch is None:  # a gradient search steps each start once a batch: smaller batches, more steps
        batch = 8 if kind in GRADIENT_KINDS else 16
    kind, budget, batch = check_search_args(kind, budget, batch)
    if not 0.0 < strength < 1.0:
        raise InputError(f"strength must be between 0 and 1, but is {strength!r}")
    if kind in GRADIENT_KINDS:
        return gradient_search(generator, surrogate, family, budget=budget, kind=kind, seed=seed, batch=batch,
                               strength=strength, progress=progress, **gradient)
    if gradient:
        raise InputError(f"{', '.join(sorted(gradient))}: settings of the gradient searches, not of a {kind} search")
    rng = np.random.default_rng(seed)
    tell = progress or (lambda f, text: None)
    shape = tuple(generator.latent_shape)
    trials: list[Trial] = []
    n_init = budget if kind == "random" else min(budget, max(batch, budget // 4))

    def fresh() -> Trial:
        asked = family.sample_asked(rng)
        syn = {k: int(rng.integers(len(family.slots[k][v]))) for k, v in asked.items()}
        return Trial(family.render(asked, synonyms=syn), asked, (int(rng.integers(2 ** 31)),), (0, 0, 0, 0),
                     "random", syn)

    def child(parent: Trial) -> Trial:
        if kind == "latent":
            lineage = parent.lineage + (int(rng.integers(2 ** 31)),)
            return Trial(parent.prompt, parent.asked, lineage, parent.wording, "mutant", parent.synonyms)
        w = list(parent.wording)  # prompt: one wording gene changed, fresh noise
        sizes = family.wording_sizes()
        genes = [g for g in range(4) if sizes[g] > 1]
        if genes:
            g = int(rng.choice(genes))
            w[g] = int((w[g] + rng.integers(1, sizes[g])) % sizes[g])
        w = tuple(w)
        return Trial(family.render(parent.asked, w, parent.synonyms), parent.asked, (int(rng.integers(2 ** 31)),), w,
                     "mutant", parent.synonyms)

    while len(trials) < budget:
        n = min(batch, budget - len(trials))  # never past the budget
        if len(trials) < n_init:
            todo = [fresh() for _ in range(min(n, n_init - len(trials)))]
        else:
            # ties go to the newest trials: with no signal yet the search drifts instead of restarting
            order = sorted(range(len(trials)), key=lambda i: (trials[i].agreement, -i))[:max(1, elite)]
            parents = [trials[i] for i in order]
            a = np.asarray([t.agreement for t in parents])
            w = np.exp(-(a - a.min()) / temperature)  # the worst-served parents get most children
            pick = rng.choice(len(parents), size=n, p=w / w.sum())
            todo = [fresh() if rng.random() < explore else child(parents[int(i)]) for i in pick]
        _evaluate(generator, surrogate, todo, shape, strength)
        trials += todo
        tell(len(trials) / budget, f"{len(trials)}/{budget} images, {sum(t.failed for t in trials)} failures")
    notes = [f"{kind} search: {len(trials)} images, {sum(t.failed for t in trials)} failures "
             f"({sum(t.failed for t in trials) / max(1, len(trials)):.0%})"]
    return SearchResult(kind, family.name, budget, trials, notes)


def _evaluate(generator, surrogate, todo: list[Trial], shape, strength: float) -> None:
    latents = np.stack([latent_for(t.lineage, shape, strength) for t in todo])
    images = np.asarray(generator([t.prompt for t in todo], latents, [t.lineage[0] for t in todo]))
    if images.shape[0] != len(todo):
        raise ValueError(f"the generator returned {images.shape[0]} images for {len(todo)} prompts")
    s = surrogate.score(images, [t.asked for t in todo])
    for i, t in enumerate(todo):
        t.agreement, t.drawn, t.failed = float(s.agreement[i]), str(s.drawn[i]), bool(s.failed[i])
        t.image = images[i]
        t.features = None if s.features is None else np.asarray(s.features[i], np.float32)


# ---------------------------------------------------------------------------------------
# Grouping the failures and showing them as a corpus

def cluster_failures(failures: list[Trial], *, k: int | None = None, seed: int = 0) -> np.ndarray:
    """k-means (FAISS) on the surrogate's features of the failures; k default: about sqrt(n/2), at
    most 8. Fewer than 4 failures (or no features) are one group."""
    n = len(failures)
    if n < 4 or any(t.features is None for t in failures):
        return np.zeros(n, np.int64)
    from backends.clusters.clustering import kmeans, relabel_by_size

    x = np.stack([t.features for t in failures]).astype(np.float32)
    k = int(k or min(8, max(2, round(math.sqrt(n / 2)))))
    labels, _, _ = kmeans(x, min(k, n), n_init=3, seed=seed)
    return relabel_by_size(labels)


def failures_corpus(result: SearchResult, *, name: str | None = None, seed: int = 0):
    """The failures as a Corpus (vectors: the surrogate's features; metadata prompt, asked, drawn,
    cluster, seed, lineage, agreement; images: the generated images). None with fewer than 2."""
    import pandas as pd

    from backends.corpora.corpus import Corpus

    fails = result.failures
    if len(fails) < 2:
        return None
    labels = cluster_failures(fails, seed=seed)
    x = np.stack([t.features if t.features is not None else t.image.reshape(-1) / 255.0 for t in fails])
    if np.all(x == x[0]):  # a map needs some spread
        x = x + np.random.default_rng(seed).normal(0, 1e-4, x.shape)
    meta = pd.DataFrame({
        "id": [f"f-{i}" for i in range(len(fails))],
        "prompt": [t.prompt for t in fails],
        "asked": [" ".join(t.asked.values()) for t in fails],
        "drawn": [t.drawn for t in fails],
        "cluster": [f"cluster {int(c)}" for c in labels],
        "seed": [t.seed for t in fails],
        "lineage": [">".join(str(s) for s in t.lineage) for t in fails],
        "agreement": [round(t.agreement, 3) for t in fails],
        "gradient_steps": [t.steps for t in fails],
        "search": result.kind,
    })
    return Corpus(name or f"failures: {result.family}", x.astype(np.float32), meta,
                  images=np.stack([t.image for t in fails]).astype(np.uint8), texts=[t.prompt for t in fails],
                  description=f"where the model fails: {len(fails)} of {result.used} images from a {result.kind} "
                              f"search on {result.family!r} (budget {result.budget})")


__all__ = ["FILLERS", "KINDS", "MAX_BUDGET", "PREFIXES", "SUFFIXES", "PromptFamily", "Scores", "SearchResult",
           "Trial", "check_search_args", "cluster_failures", "failures_corpus", "fix_articles", "latent_for",
           "search_failures"]
