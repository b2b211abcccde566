"""Directions: PCA (kernel trick, incremental), Jacobian power iteration vs the explicit Jacobian,
supervised / conditional / text directions, strengths, ISTD, judge reports, export/import — on a
tiny random UNet; and the quality bars on the shipped Shapes generator + judge when present."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)

from backends.errors import InputError  # noqa: E402
from backends.generative import directions as D  # noqa: E402
from backends.generative import hspace as hspace  # noqa: E402
from test_hspace import tiny_pipe  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


@pytest.fixture(scope="module")
def bank(pipe):
    prompts = ["a red circle", "a blue circle", "a red star", "a blue star"] * 3
    f = pd.DataFrame({"colour": ["red", "blue"] * 6, "shape": ["circle", "circle", "star", "star"] * 3})
    return D.sample_bank(pipe, prompts, seeds=0, steps=3, guidance_scale=2.0, factors=f, batch=12)


# -- PCA ----------------------------------------------------------------------------------

def test_pca_kernel_trick_matches_covariance_pca():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((30, 200)) @ np.diag(np.linspace(3, 0.1, 200))  # N < D: kernel trick
    c1, s1, m1 = D.pca(x, 5)
    c2, s2, m2 = D.PCAAccumulator(5).partial_fit(x[:10]).partial_fit(x[10:]).result()  # streaming
    np.testing.assert_allclose(s1, s2, rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(c1 * c2, 1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(c1, axis=1), 1.0, atol=1e-5)
    # σ is the std of the projections
    np.testing.assert_allclose(np.std((x - m1) @ c1.T, axis=0, ddof=1), s1, rtol=1e-4)


def test_pca_directions_per_timestep_with_aligned_signs(bank):
    dirs = D.pca_directions(bank, k=4)
    assert len(dirs) == 4 and dirs[0].vectors.shape == (3, int(np.prod(bank.h_shape)))
    for d in dirs:
        assert (d.sigma > 0).all()
        cos = np.sum(d.vectors[1:] * d.vectors[:-1], 1)
        assert (cos >= 0).all()  # signs aligned step to step
    assert dirs[0].sigma.mean() >= dirs[1].sigma.mean()


def test_streaming_pca_matches_the_in_memory_pca(pipe, bank):
    stream = D.streaming_pca_directions(pipe, bank.prompts, k=3, seeds=bank.seeds, steps=3, guidance_scale=2.0,
                                        batch=5)
    mem = D.pca_directions(bank, k=3)
    for a, b in zip(stream, mem):
        np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-3)
        np.testing.assert_allclose(np.abs(np.sum(a.vectors * b.vectors, 1)), 1.0, atol=1e-3)
    # beyond max_cov_dim the accumulator switches to scikit-learn's IncrementalPCA
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 40)) * np.r_[10.0, 6.0, 3.0, np.full(37, 0.3)]  # separated top 3
    c, sd, _ = D.PCAAccumulator(3, max_cov_dim=10).partial_fit(x[:30]).partial_fit(x[30:]).result()
    c2, sd2, _ = D.pca(x, 3)
    np.testing.assert_allclose(sd, sd2, rtol=0.05)
    assert np.all(np.abs(np.sum(c * c2, 1)) > 0.95)


# -- Jacobian -------------------------------------------------------------------------------

def test_jacobian_power_iteration_matches_the_explicit_jacobian():
    from torch.func import jvp

    p = tiny_pipe(image_size=16, spatext=False)  # h is 16x2x2 = 64 numbers: the Jacobian is small
    tr = hspace.generate(p, "a red circle", seeds=1, steps=4, guidance_scale=3.0)
    dirs, s = D.jacobian_directions(p, tr, 1, k=3, iters=100, tol=1e-7)
    n = int(np.prod(tr.h_shape))
    with hspace.jacobian_session(p, tr, 1) as f:  # explicit: one JVP per basis vector (test only)
        eye = torch.eye(n).reshape((n,) + tr.h_shape)
        _, jac = jvp(f, (torch.zeros_like(eye),), (eye,))
    _, sv, vh = torch.linalg.svd(jac.reshape(n, -1).T.double(), full_matrices=False)
    np.testing.assert_allclose(s, sv[:3].numpy(), rtol=1e-3)
    for j in range(3):
        assert abs(float(vh[j].float() @ torch.from_numpy(dirs[j].vectors[0]))) > 0.999
    # a region mask gives the directions of J restricted to that region
    mask = np.zeros((4, 4), np.float32)
    mask[:2, :2] = 1
    md, ms = D.jacobian_directions(p, tr, 1, k=1, iters=100, tol=1e-7, mask=mask)
    jm = (jac * torch.from_numpy(mask)).reshape(n, -1).T.double()
    _, svm, vhm = torch.linalg.svd(jm, full_matrices=False)
    assert abs(float(vhm[0].float() @ torch.from_numpy(md[0].vectors[0]))) > 0.999
    assert md[0].meta["masked"]


# -- supervised, conditional, text ------------------------------------------------------------

def test_factor_direction_and_orthogonalisation(bank):
    d = D.factor_direction(bank, "colour", "blue")
    assert d.name == "colour → blue" and d.kind == "supervised" and d.default_strength > 0
    assert d.meta["n_pos"] == 6 and d.meta["n_neg"] == 6
    s = D.factor_direction(bank, "shape", "star")
    o = D.orthogonalize(d, [s], bank)
    for t in range(len(o.vectors)):
        assert abs(float(o.vectors[t] @ s.vectors[t])) < 1e-4
    g = D.group_direction(bank, [1, 3, 5], [0, 2, 4], name="A → B")
    assert g.kind == "groups"
    with pytest.raises(InputError, match="Unknown factor"):
        D.factor_direction(bank, "texture", "x")
    with pytest.raises(InputError, match="no sample"):
        D.factor_direction(bank, "colour", "green")
    with pytest.raises(InputError, match="outside"):
        D.group_direction(bank, [0, 99], [1])


def test_prompt_pair_and_text_directions(pipe):
    pp = D.prompt_pair_direction(pipe, "a red circle", "a blue circle", n=2, steps=2, guidance_scale=2.0)
    assert pp.kind == "prompt-pair" and pp.vectors.shape[0] == 2
    assert not np.any(pp.vectors[0])  # unconditional h at the first step: same noise, same h
    t = D.text_direction(pipe, "a red circle", "a blue circle")
    apply = D.text_cond_delta([t], [1.0])
    c = hspace.encode_conditioning(pipe, ["a red circle"], 2.0)
    target = hspace.encode_conditioning(pipe, ["a blue circle"], 2.0)
    np.testing.assert_allclose(apply(c).cond.states.numpy(), target.cond.states.numpy(), atol=1e-5)
    tr = hspace.generate(pipe, "a red circle", seeds=2, steps=2, guidance_scale=2.0)
    img = D.render(pipe, tr, [t], [1.0])
    assert np.abs(img.astype(int) - tr.images).mean() > 0.5


# -- composing edits ---------------------------------------------------------------------------

def test_strengths_are_in_sigma_and_the_range_is_respected(pipe, bank):
    tr = hspace.generate(pipe, "a red circle", seeds=1, steps=3, guidance_scale=2.0)
    d = D.pca_directions(bank, k=2)
    deltas = D.compose_deltas(d, [[2.0, -1.0]], tr, t_range=(0.0, 0.5))
    assert deltas.shape == (3, 1) + tr.h_shape
    want = 2.0 * d[0].sigma[0] * d[0].vectors[0] - 1.0 * d[1].sigma[0] * d[1].vectors[0]
    np.testing.assert_allclose(deltas[0, 0].flatten().numpy(), want, rtol=1e-5, atol=1e-6)
    assert float(deltas[2].abs().max()) == 0.0  # outside (0, 0.5) of the steps
    ss, frames = D.traversal(pipe, tr, d[0], strength=2.0, frames=5)
    assert frames.shape == (5, 64, 64, 3) and ss[0] == -2.0 and ss[-1] == 2.0
    assert np.abs(frames[2].astype(int) - tr.images[0]).max() <= 1  # the middle frame is the source
    for bad in (1e9, float("nan"), float("inf"), "x"):
        with pytest.raises(InputError, match="strength"):
            D.render(pipe, tr, d[:1], [bad])


def test_directions_of_another_layer(pipe, bank):
    prompts = bank.prompts
    up = D.sample_bank(pipe, prompts, seeds=0, steps=3, guidance_scale=2.0, factors=bank.factors, batch=12,
                       layer="up_blocks.0")
    assert up.layer == "up_blocks.0" and up.h_shape != bank.h_shape
    pu = D.pca_directions(up, k=1, prefix="up0-pc")[0]
    pm = D.pca_directions(bank, k=1)[0]
    assert D.layer_of(pu) == "up_blocks.0" and D.layer_of(pm) == "mid_block"
    tr = hspace.generate(pipe, "a red circle", seeds=1, steps=3, guidance_scale=2.0)  # recorded at mid_block
    img = D.render(pipe, tr, [pu], [3.0])
    assert np.abs(img.astype(int) - tr.images).mean() > 0.5
    with pytest.raises(InputError, match="different layers"):
        D.render(pipe, tr, [pu, pm], [1.0, 1.0])


def test_istd():
    ramp = np.stack([np.full((8, 8, 3), v, np.uint8) for v in np.linspace(0, 200, 11)])
    assert D.istd(ramp) < 1e-3  # equal steps: perfectly smooth
    jumpy = ramp.copy()
    jumpy[6:] = 255
    assert D.istd(jumpy) > D.istd(ramp) + 0.1
    with pytest.raises(InputError):
        D.istd(ramp[:2])


class MeanColourJudge:
    """A stand-in judge for the mechanics: colour = the dominant channel, size = brightness tercile."""

    def predict(self, images):
        m = np.asarray(images, np.float64).mean((1, 2))
        colour = np.array(["red", "green", "blue"])[m.argmax(1)]
        size = np.array(["small", "medium", "large"])[np.clip((m.mean(1) / 86).astype(int), 0, 2)]
        n = len(m)
        return pd.DataFrame({"shape": ["circle"] * n, "colour": colour, "size": size, "position": ["center"] * n})


def test_judge_report_names_the_change(pipe, bank):
    tr = hspace.generate(pipe, ["a red circle", "a blue star", "a red star"], seeds=4, steps=3, guidance_scale=2.0)
    d = D.pca_directions(bank, k=1)[0]
    rep = D.judge_direction(pipe, d, tr, MeanColourJudge(), strength=20.0, istd_samples=1)
    assert set(rep["changes"]) == {"shape", "colour", "size", "position"}
    assert rep["changes"]["shape"] == 0.0 and rep["changes"]["position"] == 0.0
    assert 0.0 <= rep["disentanglement"] <= 1.0 and rep["istd"] >= 0.0
    if sum(rep["changes"].values()) > 0:
        assert rep["name"].startswith(("colour", "size"))
    base = pd.DataFrame({"size": ["small", "small"]})
    assert D._name_from("size", base, pd.DataFrame({"size": ["large", "medium"]}), base) == "size +"
    assert D._name_from("colour", pd.DataFrame({"colour": ["red"]}), pd.DataFrame({"colour": ["blue"]}), None) == "colour → blue"


# -- export / import --------------------------------------------------------------------------

def test_export_import_round_trip_and_bad_files(tmp_path, bank, pipe):
    dirs = D.pca_directions(bank, k=2) + [D.factor_direction(bank, "colour", "blue"), D.text_direction(pipe, "a", "b")]
    path = D.save_directions(dirs, tmp_path / "d.safetensors", model="tiny")
    back = D.load_directions(path, h_shape=bank.h_shape)
    assert [d.id for d in back] == [d.id for d in dirs]
    for a, b in zip(dirs, back):
        np.testing.assert_array_equal(a.vectors, b.vectors)
        np.testing.assert_array_equal(a.sigma, b.sigma)
        assert a.name == b.name and a.kind == b.kind and a.h_shape == b.h_shape
    with pytest.raises(InputError, match="shape"):
        D.load_directions(path, h_shape=(3, 2, 2))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="could not read"):
        D.load_directions(junk)
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(InputError, match="not a directions file"):
        D.load_directions(other)
    with pytest.raises(InputError, match="no directions"):
        D.save_directions([], tmp_path / "e.safetensors")


# ---------------------------------------------------------------------------------------
# Quality bars on the shipped Shapes generator and judge (skipped without their weights)

def _shapes():
    from backends.shapes.generator import WEIGHTS
    from backends.shapes.judge import WEIGHTS as JUDGE

    if not WEIGHTS.exists() or not JUDGE.exists():
        pytest.skip("the trained Shapes generator and judge are not in assets/")
    from backends.shapes.judge import load_judge
    from backends.shapes.pipeline import load_shapes_pipeline

    return load_shapes_pipeline(), load_judge()


@pytest.fixture(scope="module")
def shapes_bank():
    pipe, judge = _shapes()
    prompts, factors = D.shapes_prompts(120, seed=0)
    b = D.sample_bank(pipe, prompts, seeds=0, steps=10, factors=factors, batch=60)
    b.judged = judge.predict(b.images)
    return pipe, judge, b


def _sources(pipe, n: int, seed: int = 1000):
    prompts, _ = D.shapes_prompts(n, seed=7)
    return hspace.generate(pipe, prompts, seeds=seed, steps=10)


@pytest.mark.xfail(strict=False, reason="quality bar of the trained generator, at its edge: the shipped step-168000 "
                                        "generator has 0 of 10 (top shares 0.33-0.67 on 8-38% of samples), the "
                                        "step-150000 one 0 of 10 (0.33-0.67 on 8-29%), the step-118000 one 0 of 10 (0.38-0.67 on 12-29%), the "
                                        "step-86000 one 0 of 10 (0.62-0.67 on 12-29%, or 1.0 on 4%), "
                                        "the step-76000 one 3 of 10 (shape, shares 0.8 on 21% of samples; passed), the "
                                        "step-54000 one 3 of 10 (0.71-0.78 on 25-33%), the step-66000 one 1 of 10, the "
                                        "previous step-60000 one 0 of 10 (top shares 0.38-0.62): most edits change the "
                                        "judged shape of 8-25% of samples, around the 20% floor (docs/directions.md)")
def test_top10_pca_directions_have_dominant_factors(shapes_bank):
    pipe, judge, bank = shapes_bank
    src = _sources(pipe, 12)
    count, shares = 0, []
    for d in D.pca_directions(bank, k=10):
        rep = D.judge_direction(pipe, d, src, judge, istd_samples=0)
        shares.append((d.id, round(rep["disentanglement"], 2), rep["dominant"], round(rep["any_change"], 2)))
        count += rep["disentanglement"] >= 0.7 and rep["any_change"] >= 0.2
    print("PCA dominant factors:", count, shares)
    assert count >= 3


@pytest.mark.xfail(strict=False, reason="quality bar of the trained generator: the shipped step-168000 generator "
                                        "changes the colour on 0% (shape kept 96%) at the default 1.63 sigma, as the "
                                        "step-150000 one (0%, 96%), the step-118000 one (0%, 100%), the "
                                        "step-86000 one (0%, 96%), the step-76000 one (0%, 92%) and the step-54000 one "
                                        "(0%, 96%) did; no layer, half, strength or recipe reaches 80% colour with 90% "
                                        "shape kept (after the h-swap loss 2x the strength turns 86% blue, keeping 54% of shapes), and even each source's own per-step Δh to its blue twin turns only 78% "
                                        "blue (scripts/colour_direction_recipes.py, docs/directions.md)")
def test_supervised_colour_direction_changes_colour_and_keeps_shape(shapes_bank):
    pipe, judge, bank = shapes_bank
    d = D.factor_direction(bank, "colour", "blue", labels="judge")
    src = _sources(pipe, 24)
    base = judge.predict(src.images)
    keep = base["colour"].to_numpy() != "blue"
    imgs = D.render(pipe, src, [d], np.full((src.batch, 1), d.default_strength))
    after = judge.predict(imgs)
    colour_changed = float(np.mean(after["colour"].to_numpy()[keep] != base["colour"].to_numpy()[keep]))
    shape_kept = float(np.mean(after["shape"].to_numpy() == base["shape"].to_numpy()))
    print(f"colour → blue at strength {d.default_strength:.2f}σ: colour changed {colour_changed:.2f}, shape kept {shape_kept:.2f}")
    assert colour_changed >= 0.8 and shape_kept >= 0.9


def test_hspace_corpus_for_the_atlas():
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    from backends.corpora.corpus import available_corpora, load_corpus
    from backends.generative.hspace_corpus import direction_axis, shapes_bank, trajectory

    assert "hspace" in available_corpora()
    c = load_corpus("hspace", n=16, step=3)
    assert len(c) == 16 and c.images is not None and c.vectors.shape[1] == 64  # channels of the mid block
    assert {"prompt", "seed", "colour", "shape"} <= set(c.meta.columns)
    bank = shapes_bank(None, 16)
    d = D.pca_directions(bank, k=1)[0]
    x = direction_axis(bank, d, 3)
    assert x.shape == (16,) and abs(float(np.std(x, ddof=1)) - 1.0) < 1e-3  # in units of σ
    assert trajectory(bank, 2).shape == (bank.h.shape[1], 2)


def test_hspace_corpus_is_kept_in_the_app_cache_and_shared_with_directions(tmp_path, monkeypatch):
    """A second server start opens the hspace corpus from the disk cache (no sampling), and the
    Directions tab's PCA discovery uses the same bank (no sampling either)."""
    from backends.shapes.generator import WEIGHTS

    if not WEIGHTS.exists():
        pytest.skip("the trained Shapes generator is not in assets/")
    import backends.generative.hspace_corpus as H
    from app.services.directions import DirectionsService
    from backends.registry import Backends
    from backends.settings import Settings

    monkeypatch.setattr(H, "DEFAULT_SAMPLES", 12)
    first = Backends(Settings(cache_dir=tmp_path))
    c1 = first.corpus("hspace")
    assert len(c1) == 12
    H._BANKS.clear()  # a new process: nothing in memory

    def no_sampling(*a, **k):
        raise AssertionError("sampled again although the bank is in the disk cache")

    monkeypatch.setattr(D, "sample_bank", no_sampling)
    second = Backends(Settings(cache_dir=tmp_path))
    c2 = second.corpus("hspace")
    np.testing.assert_array_equal(c1.vectors, c2.vectors)
    svc = DirectionsService(second, judge=False)
    assert svc.n_bank == 12
    from app.services.directions import half_defaults

    record, _ = half_defaults(second)  # the half the tab starts on
    assert svc.discover_pca(k=2, half=record)[0].endswith("pc1")
