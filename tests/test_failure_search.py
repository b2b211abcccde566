"""The failure search (backends/generative/failure_search.py, after SAGE): it spends exactly its
budget, the prompt search never changes the asked words, planted failures (a fake generator that
fails for a known latent region or a known word) are found more often than random sampling finds
them, the failures become an Atlas corpus with the promised columns, the Shapes judge and an
encoder surrogate judge real images, and the code path runs on tiny SD and through the app's API.
The gradient searches (backends/generative/failure_gradient.py): only the learnable tokens (or the
latent offset) get gradients and change, the differentiable sampler gives the pipeline's own images,
both budgets hold, a planted differentiable failure region is found, and the failures corpus is kept
across a restart."""
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


def test_a_doubtful_verdict_shows_the_outline_reading():
    """Where the judge and the geometric scorer read a single object's shape differently, "drawn" says
    both (the verdict stays the judge's): a person sees which failures are doubtful."""
    from backends.shapes import scenes
    from backends.shapes.failures import JudgeSurrogate

    class TriangleJudge:  # reads every image as a red triangle
        labels = {"shape": ["circle", "square", "triangle", "star", "cross"], "colour": ["red", "blue"],
                  "size": ["small", "medium", "large"], "position": ["center", "top"]}

        def predict_proba(self, images):
            n = len(images)
            return {k: np.tile(np.eye(len(v))[2 if k == "shape" else 0], (n, 1)) for k, v in self.labels.items()}

    square = scenes.render(scenes.SceneSpec([scenes.ObjectSpec("square", "red", "large", 0.5, 0.5, 10.0)], "black"), 32)[0]
    triangle = scenes.render(scenes.SceneSpec([scenes.ObjectSpec("triangle", "red", "large", 0.5, 0.5, 0.0)], "black"), 32)[0]
    s = JudgeSurrogate(TriangleJudge()).score(np.stack([square, triangle]), [{"colour": "red", "shape": "square"}] * 2)
    assert list(s.failed) == [True, True]
    assert s.drawn == ["red triangle (outline reads square)", "red triangle"]


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
    grad = c.predict("", 12, "token-gradient", 1, 2, 5, api_name="/generate_failure_search")  # batches of 8
    assert grad["used"] == 12 and grad["kind"] == "token-gradient" and grad["gradient_steps"] == 1
    if grad["corpus"]:  # kept on disk with the uploads: listed after a restart
        assert grad["corpus"] in backends.uploads.keys()
        assert "token-gradient search, seed 1" in backends.corpus_label(grad["corpus"])


# ---------------------------------------------------------------------------------------
# Gradient searches

class FakeDiffGenerator(FakeGenerator):
    """Differentiable: the first pixel is sigmoid(-3 (z - 1)) * sigmoid(-8 (s - 0.5)), z the latent's
    first value, s the mean first coordinate of the appended tokens (0 without tokens): a failure
    region z > 1 for the latent search and s > 0.5 for the token search."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.dim, self.seen = dim, []

    def token_space(self, prompts):
        import torch

        return torch.zeros(len(prompts), self.dim), torch.ones(len(prompts))

    def sample_differentiable(self, prompts, latents, seeds, tokens=None):
        import torch

        self.images += len(prompts)
        self.calls.append(len(prompts))
        self.seen.append((latents.detach().clone(), None if tokens is None else tokens.detach().clone()))
        s = tokens[:, :, 0].mean(1) if tokens is not None else latents.new_zeros(len(prompts))
        ok = torch.sigmoid(-3 * (latents[:, 0, 0, 0] - 1)) * torch.sigmoid(-8 * (s - 0.5))
        img = torch.zeros(len(prompts), 3, 8, 8) + 0.5
        return torch.cat([torch.cat([ok[:, None, None, None], img[:, :1, :1, 1:]], 3), img[:, :1, 1:]], 2).expand(
            -1, 3, -1, -1) * torch.tensor([1.0, 0.5, 0.5]).view(1, 3, 1, 1)


class FakeDiffSurrogate(FakeSurrogate):
    def __init__(self):
        self.backward = 0

    def log_agreement(self, images, asked):
        self.backward += 1
        return images[:, 0, 0, 0].clamp(min=1e-6).log()


@pytest.mark.parametrize("kind", ["token-gradient", "latent-gradient"])
@pytest.mark.parametrize("budget,grad_steps", [(1, None), (7, None), (20, 2), (20, 0), (20, None)])
def test_a_gradient_search_spends_exactly_its_image_budget_and_at_most_its_gradient_steps(kind, budget, grad_steps):
    gen, sur = FakeDiffGenerator(), FakeDiffSurrogate()
    r = search_failures(gen, sur, FAMILY, budget=budget, kind=kind, seed=1, batch=4, grad_steps=grad_steps)
    assert gen.images == budget == r.used and max(gen.calls) <= 4
    batches = -(-budget // 4)
    assert r.gradient_steps == sur.backward <= min(batches - 1, grad_steps if grad_steps is not None else 99)
    if grad_steps is None and budget > 4:
        assert r.gradient_steps == batches - 1  # every batch but the last is stepped
    assert all(t.steps == 0 for t in r.trials) if not r.gradient_steps else any(t.steps for t in r.trials)


def test_a_planted_differentiable_failure_region_is_found_by_the_gradient_searches():
    rates = {}
    for kind in ("random", "token-gradient", "latent-gradient"):
        r = search_failures(FakeDiffGenerator(), FakeDiffSurrogate(), FAMILY, budget=96, kind=kind, seed=0, batch=8)
        rates[kind] = r.failure_rate
        if kind == "token-gradient":  # tokens start where they do not fail: most failures took gradient steps
            stepped = [t for t in r.failures if t.steps >= 1]
            assert len(stepped) > 0.2 * r.used and all(t.origin == "gradient" for t in stepped)
    assert rates["token-gradient"] > 1.5 * rates["random"] and rates["latent-gradient"] > 1.5 * rates["random"], rates


def test_only_the_optimised_input_changes_during_a_start():
    """Token search: a start's latent stays the same and its tokens move; latent search: no tokens."""
    import torch

    for kind in ("token-gradient", "latent-gradient"):
        gen = FakeDiffGenerator()
        search_failures(gen, FakeDiffSurrogate(), FAMILY, budget=8, kind=kind, seed=4, batch=4, steps_per_start=9)
        (z1, t1), (z2, t2) = gen.seen
        if kind == "token-gradient":
            assert torch.equal(z1, z2) and not torch.allclose(t1, t2)
            assert (t2 - t1).norm(dim=-1).max() <= 1.0 + 1e-5  # within the ball (radius 1 x RMS norm 1)
        else:
            assert t1 is None and t2 is None and not torch.allclose(z1, z2)
            np.testing.assert_allclose(z1.flatten(1).norm(dim=1), z2.flatten(1).norm(dim=1), rtol=1e-5)


def test_a_search_without_a_differentiable_path_is_refused_by_name():
    with pytest.raises(InputError, match="needs a generator with a differentiable path"):
        search_failures(FakeGenerator(), FakeDiffSurrogate(), FAMILY, budget=4, kind="token-gradient")
    with pytest.raises(InputError, match="needs a surrogate with a differentiable path"):
        search_failures(FakeDiffGenerator(), FakeSurrogate(), FAMILY, budget=4, kind="latent-gradient")
    with pytest.raises(InputError, match="settings of the gradient searches"):
        search_failures(FakeGenerator(), FakeSurrogate(), FAMILY, budget=4, kind="latent", grad_steps=2)
    from backends.generative.surrogates import EncoderSurrogate

    class NumpyOnly:  # an encoder without a differentiable image tower: refused before any image is made
        def encode_images(self, images):
            return np.ones((len(images), 4))

        def encode_texts(self, texts):
            return np.ones((len(texts), 4))

    gen = FakeDiffGenerator()
    with pytest.raises(InputError, match="differentiable image tower"):
        search_failures(gen, EncoderSurrogate(NumpyOnly()), FAMILY, budget=4, kind="token-gradient")
    assert gen.images == 0
    with pytest.raises(InputError, match="token_radius"):
        search_failures(FakeDiffGenerator(), FakeDiffSurrogate(), FAMILY, budget=4, kind="token-gradient",
                        token_radius=-1)


@pytest.fixture(scope="module")
def tiny_shapes():
    import torch

    from backends.generative.surrogates import PipelineGenerator
    from backends.plugins import get_generator

    torch.set_num_threads(1)
    pipe = get_generator("shapes").tiny(seed=0, spatext_channels=4, image_size=32)
    pipe.default_eta, pipe.default_steps = 1.0, 3  # the sampler's own noise matters, as on the shipped model
    return PipelineGenerator(pipe)


def test_tokens_get_gradients_and_the_model_does_not(tiny_shapes):
    import torch

    gen, prompts = tiny_shapes, ["a red circle", "a blue star"]
    weights = {k: v.clone() for k, v in gen.pipe.unet.state_dict().items()}
    z = torch.from_numpy(np.stack([latent_for((s,), gen.latent_shape, 0.5) for s in (3, 4)]))
    mean, rms = gen.token_space(prompts)
    assert mean.shape == (2, gen.pipe.text_encoder.encode_tokens(["x"])[0].shape[-1]) and (rms > 0).all()
    tokens = mean[:, None].repeat(1, 2, 1).requires_grad_(True)
    images = gen.sample_differentiable(prompts, z, [3, 4], tokens)
    assert images.shape == (2, 3, 32, 32) and 0 <= float(images.detach().min()) <= float(images.detach().max()) <= 1
    (g,) = torch.autograd.grad(images[:, 0].mean(), [tokens])
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    assert all(p.grad is None for p in gen.pipe.unet.parameters())
    assert all(torch.equal(v, gen.pipe.unet.state_dict()[k]) for k, v in weights.items())
    again = gen.sample_differentiable(prompts, z, [3, 4], tokens.detach())  # the tokens do change the image
    plain = gen.sample_differentiable(prompts, z, [3, 4])
    assert not torch.allclose(again, plain)
    # with recomputed steps the gradient is the same
    tokens2 = tokens.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(gen.sample_differentiable(prompts, z, [3, 4], tokens2, checkpoint=True)[:, 0].mean(),
                                [tokens2])
    torch.testing.assert_close(g2, g, rtol=1e-4, atol=1e-7)


def test_the_differentiable_sampler_draws_the_pipelines_own_images(tiny_shapes):
    import torch

    gen, prompts, seeds = tiny_shapes, ["a red circle", "a green square", "a star"], [7, 8, 9]
    z = np.stack([latent_for((s,), gen.latent_shape, 0.5) for s in seeds])
    with torch.no_grad():
        x = gen.sample_differentiable(prompts, torch.from_numpy(z), seeds)
    u8 = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    assert np.abs(u8.astype(int) - gen(prompts, z, seeds).astype(int)).max() <= 1


def test_tiny_sd_gradient_code_path_with_a_stub_encoder(tmp_path):
    pytest.importorskip("diffusers")
    import torch

    from backends.generative.sd import load_diffusers_pipeline
    from backends.generative.surrogates import OBJECT_FAMILY, EncoderSurrogate, PipelineGenerator
    from tiny_sd import write_tiny_sd

    torch.set_num_threads(1)
    proj = np.random.default_rng(0).standard_normal((32 * 32 * 3, 16)).astype(np.float32)

    class StubEncoder:  # a fixed random projection of pixels (numpy and torch alike) and a hash of texts
        def encode_images(self, images):
            return np.asarray(images, np.float32).reshape(len(images), -1) / 255.0 @ proj

        def encode_images_tensor(self, images):
            return images.permute(0, 2, 3, 1).reshape(len(images), -1) @ torch.from_numpy(proj)

        def encode_texts(self, texts):
            return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(16) for t in texts])

    gen = PipelineGenerator(load_diffusers_pipeline(str(write_tiny_sd(tmp_path / "sd"))), steps=2, checkpoint=True)
    sur = EncoderSurrogate(StubEncoder())
    for kind in ("token-gradient", "latent-gradient"):
        gen.calls = 0
        r = search_failures(gen, sur, OBJECT_FAMILY, budget=4, kind=kind, batch=2, steps_per_start=4)
        assert gen.calls == 4 == r.used and r.gradient_steps == 1 and r.trials[0].image.shape == (32, 32, 3)
        assert [t.steps for t in r.trials[2:]] == [1 if not t0.failed else 0 for t0 in r.trials[:2]]
    # the encoder surrogate's differentiable score is its score's log, summed over factors
    images = torch.rand(3, 3, 32, 32)
    asked = [{"object": "dog"}, {"object": "cat"}, {"object": "boat"}]
    u8 = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_allclose(sur.log_agreement((torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255), asked)
                               .numpy(), np.log(sur.score(u8, asked).agreement), rtol=1e-3, atol=1e-4)


def test_the_shapes_judge_has_a_differentiable_score():
    import torch

    from backends.plugins import get_surrogate

    sur = get_surrogate("shapes").load()
    if sur is None:
        pytest.skip("no judge weights in assets/")
    from backends.shapes import scenes

    img = scenes.render(scenes.SceneSpec([scenes.ObjectSpec("circle", "red", "large", 0.5, 0.5, 0.0)], "black"), 32)[0]
    x = (torch.from_numpy(np.stack([img, img])).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    asked = [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "square"}]
    la = sur.log_agreement(x, asked)
    assert la[0] > -0.2 > -5 > la[1]
    assert float(la[0].detach()) <= np.log(sur.score(np.stack([img, img]), asked).agreement[0]) + 1e-4  # sum of logs <= log min
    (g,) = torch.autograd.grad(la.sum(), [x])
    assert g.abs().sum() > 0
    two = scenes.render(scenes.SceneSpec([scenes.ObjectSpec("circle", "red", "medium", 0.25, 0.25, 0.0),
                                          scenes.ObjectSpec("star", "blue", "medium", 0.75, 0.75, 0.0)], "black"), 32)[0]
    x2 = (torch.from_numpy(np.stack([two, two])).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    la2 = sur.log_agreement(x2, [{"colour": "red", "shape": "circle", "colour2": "blue", "shape2": "star"},
                                 {"colour": "red", "shape": "circle", "colour2": "green", "shape2": "star"}])
    assert la2[0] > la2[1] and torch.isfinite(la2).all()
    assert torch.autograd.grad(la2.sum(), [x2])[0].abs().sum() > 0


def test_the_failures_corpus_is_kept_across_restarts(tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    r = search_failures(FakeGenerator(), FakeSurrogate(), FAMILY, budget=40, kind="latent", seed=2, batch=10)
    c = failures_corpus(r)
    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"))
    key, why = Backends(settings).keep_corpus(c, "failures: a {colour} {shape} (latent search, seed 2)")
    assert why is None
    again = Backends(settings)  # a restart: a new registry on the same cache dir
    assert key in again.user_corpus_keys()
    assert again.corpus_label(key) == f"failures: a {{colour}} {{shape}} (latent search, seed 2) · {len(c)} × {c.dim}"
    back = again.corpus(key)
    assert list(back.meta["prompt"]) == list(c.meta["prompt"]) and list(back.meta["seed"]) == list(c.meta["seed"])
    assert np.array_equal(back.images, c.images) and np.allclose(back.vectors, c.vectors)
    again.remove_upload(key)
    assert key not in Backends(settings).user_corpus_keys()
