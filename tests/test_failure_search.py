"""The failure search (backends/generative/failure_search.py, after SAGE): it spends exactly its
budget, the prompt search never changes the asked words, planted failures (a fake generator that
fails for a known latent region or a known word) are found more often than random sampling finds
them, the failures become an Atlas corpus with the promised columns, the Shapes judge and an
encoder surrogate judge real images, and the code path runs on tiny SD and through the app's API."""
from __future__ import annotations

import re

import numpy as np
import pytest

from backends.errors import InputError
from backends.generative.failure_search import (
    PromptFamily,
    Scores,
    failures_corpus,
    latent_for,
    search_failures,
)

FAMILY = PromptFamily("a {colour} {shape}", {"colour": {c: [c] for c in ("red", "blue", "green")},
                                             "shape": {s: [s] for s in ("circle", "square")}},
                      templates=("a {colour} {shape}", "a {shape} in {colour}"))


class FakeGenerator:
    """8×8 images whose first pixel says how well the asked thing was drawn: badly when the latent's
    first value is above 1 (about 16% of N(0, 1) draws) or the prompt holds `bad_word`."""

    latent_shape = (1, 4, 4)

    def __init__(self, bad_word: str | None = None, latent_fails: bool = True):
        self.bad_word, self.latent_fails = bad_word, latent_fails
        self.images = 0
        self.calls: list[int] = []

    def __call__(self, prompts, latents, seeds):
        assert latents.shape == (len(prompts),) + self.latent_shape and len(seeds) == len(prompts)
        self.images += len(prompts)
        self.calls.append(len(prompts))
        z = latents[:, 0, 0, 0]
        ok = 1 / (1 + np.exp(3 * (z - 1))) if self.latent_fails else np.ones(len(prompts))
        ok = np.where([self.bad_word is not None and self.bad_word in p for p in prompts], 0.0, ok)
        img = np.zeros((len(prompts), 8, 8, 3), np.uint8)
        img[:, 0, 0, 0] = np.round(255 * ok).astype(np.uint8)
        img[:, 1:, :, 1] = np.clip(128 + 40 * latents[:, :1, :, :].repeat(2, 2).repeat(2, 3)[:, 0, :7], 0, 255)
        return img


class FakeSurrogate:
    def score(self, images, asked):
        a = images[:, 0, 0, 0] / 255.0
        feats = np.stack([a, images[:, 1:, :, 1].mean((1, 2)) / 255.0], 1).astype(np.float32)
        return Scores(a, ["it" if x >= 0.5 else "something else" for x in a], a < 0.5, feats)


@pytest.mark.parametrize("kind", ["random", "latent", "prompt"])
@pytest.mark.parametrize("budget", [1, 7, 33])
def test_the_search_spends_exactly_its_budget(kind, budget):
    gen = FakeGenerator("lovely")
    r = search_failures(gen, FakeSurrogate(), FAMILY, budget=budget, kind=kind, seed=1, batch=5)
    assert gen.images == budget == r.used and max(gen.calls) <= 5
    assert r.failure_rate == len(r.failures) / budget


def test_bad_arguments_are_named():
    for kwargs, message in [({"kind": "gradient"}, "search kind must be one of"), ({"budget": 0}, "budget must be"),
                            ({"budget": 10**9}, "budget must be"), ({"strength": 1.5}, "strength")]:
        with pytest.raises(InputError, match=message):
            search_failures(FakeGenerator(), FakeSurrogate(), FAMILY, **kwargs)
    with pytest.raises(ValueError, match="names a factor word"):
        PromptFamily("a {colour} {shape}", FAMILY.slots, fillers=("", "bright red"))
    with pytest.raises(ValueError, match="has slots"):
        PromptFamily("a {colour} {shape}", FAMILY.slots, templates=("a {shape}",))


def _factor_words_left(prompt: str, family: PromptFamily, asked_words: list[str]) -> list[str]:
    text = prompt.lower()
    for w in sorted(asked_words, key=len, reverse=True):
        assert re.search(rf"\b{re.escape(w.lower())}\b", text), (prompt, w)
        text = re.sub(rf"\b{re.escape(w.lower())}\b", " ", text, count=1)
    return [w for w in family.factor_words() if re.search(rf"\b{re.escape(w)}\b", text)]


def test_prompt_mutations_never_change_the_asked_words():
    from backends.plugins import get_surrogate

    for family in get_surrogate("shapes").families().values():
        r = search_failures(FakeGenerator("lovely"), FakeSurrogate(), family, budget=80, kind="prompt", seed=3,
                            batch=8)
        assert len({t.prompt for t in r.trials}) > 20  # it did reword
        for t in r.trials:
            words = [family.slots[k][v][t.synonyms.get(k, 0)] for k, v in t.asked.items()]
            assert _factor_words_left(t.prompt, family, words) == [], t.prompt


def test_a_planted_latent_failure_is_found_more_often_than_by_random_sampling():
    rates = {}
    for kind in ("random", "latent"):
        r = search_failures(FakeGenerator(), FakeSurrogate(), FAMILY, budget=120, kind=kind, seed=0, batch=10)
        rates[kind] = r.failure_rate
        assert all(latent_for(t.lineage, (1, 4, 4), 0.5)[0, 0, 0] > 1 for t in r.failures)
    assert 0.05 < rates["random"] < 0.3 and rates["latent"] > 2 * rates["random"], rates


def test_a_planted_failing_word_is_found_by_the_prompt_search():
    gen = FakeGenerator("lovely", latent_fails=False)
    base = search_failures(gen, FakeSurrogate(), FAMILY, budget=120, kind="random", seed=0, batch=10)
    r = search_failures(gen, FakeSurrogate(), FAMILY, budget=120, kind="prompt", seed=0, batch=10)
    assert base.failure_rate == 0
    assert r.failure_rate > 0.2 and all("lovely" in t.prompt for t in r.failures)


def test_latent_mutations_stay_standard_normal():
    z = latent_for(tuple(range(12)), (200_000,), 0.5)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01


def test_the_failures_corpus_has_the_promised_columns_and_opens_via_the_registry(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    r = search_failures(FakeGenerator(), FakeSurrogate(), FAMILY, budget=60, kind="latent", seed=2, batch=10)
    c = failures_corpus(r)
    assert c.name == "failures: a {colour} {shape}" and len(c) == len(r.failures) >= 4
    assert {"prompt", "asked", "drawn", "cluster", "seed", "lineage", "agreement"} <= set(c.meta.columns)
    assert c.images.shape == (len(c), 8, 8, 3) and c.meta["cluster"].str.startswith("cluster ").all()
    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    key = b.add_corpus(c)
    assert b.corpus(key) is c and key in b.user_corpus_keys()
    assert b.corpus_label(key).startswith("failures: a {colour} {shape} · ")
    assert b.thumbnail_dir(key) is not None
    few = search_failures(FakeGenerator(latent_fails=False), FakeSurrogate(), FAMILY, budget=5, kind="random")
    assert failures_corpus(few) is None


def test_the_shapes_judge_surrogate_reads_rendered_scenes():
    from backends.plugins import get_surrogate

    plugin = get_surrogate("shapes")
    sur = plugin.load()
    if sur is None:
        pytest.skip("no judge weights in assets/")
    from backends.shapes import scenes

    one = [scenes.SceneSpec([scenes.ObjectSpec("circle", "red", "large", 0.5, 0.5, 0.0)], "black")]
    img = np.stack([scenes.render(s, 32)[0] for s in one] * 2)
    s = sur.score(img, [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}])
    assert list(s.failed) == [False, True] and s.drawn == ["red circle", "red circle"]
    assert s.agreement[0] > 0.9 > 0.1 > s.agreement[1] and s.features.shape[0] == 2
    two = scenes.SceneSpec([scenes.ObjectSpec("circle", "red", "medium", 0.25, 0.25, 0.0),
                            scenes.ObjectSpec("star", "blue", "medium", 0.75, 0.75, 0.0)], "black")
    img2 = scenes.render(two, 32)[0][None]
    ok = sur.score(img2, [{"colour": "red", "shape": "circle", "colour2": "blue", "shape2": "star"}])
    bad = sur.score(img2, [{"colour": "red", "shape": "circle", "colour2": "green", "shape2": "star"}])
    assert not ok.failed[0] and bad.failed[0] and "red circle" in ok.drawn[0]


def test_tiny_sd_code_path_with_a_stub_encoder(tmp_path):
    pytest.importorskip("diffusers")
    import torch

    from backends.generative.sd import load_diffusers_pipeline
    from backends.generative.surrogates import OBJECT_FAMILY, OBJECTS, EncoderSurrogate, PipelineGenerator
    from tiny_sd import write_tiny_sd

    torch.set_num_threads(1)

    class StubEncoder:  # a fixed random projection of pixels and a hash of texts: same space, no weights
        def encode_images(self, images):
            x = np.asarray(images, np.float32).reshape(len(images), -1)
            return x @ np.random.default_rng(0).standard_normal((x.shape[1], 16)).astype(np.float32)

        def encode_texts(self, texts):
            return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(16) for t in texts])

    gen = PipelineGenerator(load_diffusers_pipeline(str(write_tiny_sd(tmp_path / "sd"))), steps=2)
    r = search_failures(gen, EncoderSurrogate(StubEncoder()), OBJECT_FAMILY, budget=6, kind="latent", batch=3)
    assert gen.calls == 6 == r.used and r.trials[0].image.shape == (32, 32, 3)
    assert all(t.drawn in OBJECTS for t in r.trials) and all(0 <= t.agreement <= 1 for t in r.trials)
    t = r.trials[-1]  # a trial is reproducible from its lineage and seed
    again = gen([t.prompt], latent_for(t.lineage, gen.latent_shape, 0.5)[None], [t.lineage[0]])
    assert np.array_equal(again[0], t.image)


def test_the_endpoint_through_the_api(atlas_app):
    from gradio_client import Client

    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("no Shapes generator weights in assets/")
    url, backends = atlas_app
    c = Client(url, verbose=False)
    out = c.predict("a {colour} {shape}", 8, "prompt", 3, 2, api_name="/generate_failure_search")
    assert out["used"] == 8 and out["kind"] == "prompt" and len(out["rows"]) == out["failures"]
    assert out["budget"] == 8 and 0 <= out["failure_rate"] <= 1
    if out["failures"] >= 2:  # two DDIM steps: most images fail
        assert out["corpus"] in c.predict(api_name="/atlas_corpora")
        xy = c.predict(out["corpus"], "pca", api_name="/atlas_project")
        assert len(xy["ids"]) == out["failures"]
        assert {"prompt", "asked", "drawn", "cluster", "seed"} <= set(backends.corpus(out["corpus"]).meta.columns)
    small = c.predict("", 2, "random", 0, 1, api_name="/generate_failure_search")
    assert small["used"] == 4 and "budget 2 is outside 4..400; used 4" in small["notes"]
    with pytest.raises(Exception, match="family must be one of"):
        c.predict("a {shape}", 8, "latent", 0, 1, api_name="/generate_failure_search")
    with pytest.raises(Exception, match="search kind must be one of"):
        c.predict("", 8, "gradient", 0, 1, api_name="/generate_failure_search")
