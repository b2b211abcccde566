"""NoiseCLR (issue #22 item 1): the contrastive loss on inputs with a known answer and its gradient,
training on a tiny random UNet (only the direction tokens learn; the budget holds; the loss falls),
the learned directions as library text directions (render, judge, save / load), and the code path
on a tiny random Stable Diffusion folder."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
torch.set_num_threads(1)

from backends.errors import InputError  # noqa: E402
from backends.generative import directions as D  # noqa: E402
from backends.generative import hspace as hspace  # noqa: E402
from backends.generative import noiseclr as NC  # noqa: E402
from test_hspace import tiny_pipe  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


@pytest.fixture(scope="module")
def images(pipe):
    tr = hspace.generate(pipe, ["a red circle", "a blue square", "a green star", "a red square", "a blue star",
                                "a green circle"], seeds=0, steps=3)
    return tr.images


# -- the loss -------------------------------------------------------------------------------

def test_aligned_positives_reach_the_known_minimum_and_shuffled_ones_score_worse():
    tau = 0.5
    basis = torch.eye(6)[:3]  # three orthogonal directions
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0])  # four images; cosine ignores the edit's size
    aligned = basis[:, None, :] * scale[None, :, None]  # (K, B, 6)
    loss = NC.contrastive_loss(aligned, tau)
    # every positive pair has cos 1, every negative cos 0: −log(e^{1/τ} / e^0) = −1/τ
    assert float(loss) == pytest.approx(-1 / tau, abs=1e-5)
    # the same edits with the direction labels shuffled per image: positives no longer agree
    perm = torch.stack([torch.roll(torch.arange(3), i) for i in range(4)], 1)  # (K, B)
    shuffled = aligned[perm, torch.arange(4)[None, :]]
    assert float(NC.contrastive_loss(shuffled, tau)) > float(loss) + 1.0
    rand = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0))
    assert float(NC.contrastive_loss(rand, tau)) > float(loss) + 1.0
    with pytest.raises(InputError, match="at least 2 directions and 2 images"):
        NC.contrastive_loss(torch.randn(3, 1, 6))


def test_the_loss_gradient_matches_finite_differences():
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: NC.contrastive_loss(e, 0.5), (x,))


def test_the_gradient_reaches_only_the_direction_tokens(pipe, images):
    x0 = NC.image_latents(pipe, images[:3])
    null = NC.null_embeds(pipe)
    tokens = NC.init_tokens(null, 3, seed=0)[0].requires_grad_(True)
    for p in pipe.unet.parameters():
        p.requires_grad_(True)  # even a trainable UNet: the loss's graph must not need it
    try:
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        loss = NC.loss_at(pipe, tokens, x0, 500, noise, null, null.states.shape[1] - 1)
        params = list(pipe.unet.parameters())
        grads = torch.autograd.grad(loss, [tokens] + params, allow_unused=True)
    finally:
        for p in pipe.unet.parameters():
            p.requires_grad_(False)
    assert grads[0] is not None and torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    assert not null.states.requires_grad and not x0.requires_grad
    # through the UNet's weights the loss does depend on them; but training freezes them (next test)
    assert any(g is not None for g in grads[1:])


# -- training -------------------------------------------------------------------------------

def test_training_freezes_the_unet_keeps_its_budget_and_reports_progress(pipe, images):
    for p in pipe.unet.parameters():
        p.requires_grad_(True)
    seen = []
    try:
        res = NC.train_noiseclr(pipe, images, k=3, steps=4, batch_size=3, progress=lambda f, m: seen.append((f, m)))
        assert all(p.grad is None for p in pipe.unet.parameters())  # only the tokens got gradients
        assert all(p.requires_grad for p in pipe.unet.parameters())  # flags restored
    finally:
        for p in pipe.unet.parameters():
            p.requires_grad_(False)
    assert len(res.losses) == 4 and res.info["steps"] == 4 and res.info["stopped_by"] == "steps"
    assert res.tokens.shape == (3, 384) and np.isfinite(res.tokens).all()  # (k, text width of the dummy encoder)
    assert [round(f, 2) for f, _ in seen] == [0.25, 0.5, 0.75, 1.0] and "loss" in seen[-1][1]
    with pytest.raises(InputError, match="ran out of time"):
        NC.train_noiseclr(pipe, images, k=2, steps=3, batch_size=2, max_seconds=0)


@pytest.mark.parametrize("kw, match", [({"k": 1}, "k has to be"), ({"batch_size": 1}, "batch_size has to be"),
                                       ({"steps": 0}, "steps has to be"), ({"temperature": float("nan")}, "temperature"),
                                       ({"batch_size": 8}, "at least batch_size=8 images")])
def test_bad_settings_are_named(pipe, images, kw, match):
    with pytest.raises(InputError, match=match):
        NC.train_noiseclr(pipe, images, **{"k": 2, "steps": 1, "batch_size": 2, **kw})


def test_training_lowers_the_loss_on_a_fixed_evaluation(pipe, images):
    x0 = NC.image_latents(pipe, images)
    null = NC.null_embeds(pipe)
    slot = null.states.shape[1] - 1
    g = torch.Generator().manual_seed(5)
    evals = [(t, torch.randn(x0.shape, generator=g)) for t in (300, 700)]

    def loss(tokens):
        with torch.no_grad():
            return float(np.mean([float(NC.loss_at(pipe, tokens, x0, t, n, null, slot)) for t, n in evals]))

    before = loss(NC.init_tokens(null, 3, seed=0)[0])
    res = NC.train_noiseclr(pipe, images, k=3, steps=20, batch_size=3, lr=0.2, seed=0)
    after = loss(torch.from_numpy(res.tokens))
    assert after < before - 0.05, (before, after)


# -- as library directions ------------------------------------------------------------------------

def test_learned_directions_edit_judge_and_round_trip(pipe, images, tmp_path):
    from test_directions import MeanColourJudge

    res = NC.train_noiseclr(pipe, images, k=2, steps=3, batch_size=2, seed=0)
    dirs = NC.to_directions(pipe, res)
    assert [d.name for d in dirs] == ["NoiseCLR 1", "NoiseCLR 2"] and {d.kind for d in dirs} == {"text"}
    assert dirs[0].meta["method"] == "noiseclr" and dirs[0].default_strength == 1.0
    # strength 1 on the empty prompt is c_k itself: the token in the last slot
    null = NC.null_embeds(pipe)
    v = dirs[0].vectors[0].reshape(dirs[0].h_shape)
    np.testing.assert_allclose(v[null.states.shape[1] - 1], res.tokens[0] - null.states[0, -1].numpy(), atol=1e-5)
    src = hspace.generate(pipe, ["a red circle", "a blue star"], seeds=3, steps=3)
    one = D.render(pipe, src, dirs[:1], np.full((2, 1), 1.0))  # one strength for a batch of sources
    assert one.shape == src.images.shape and np.abs(one.astype(int) - src.images).mean() > 0.1
    with pytest.raises(InputError, match="one strength"):
        D.render(pipe, src, dirs[:1], np.array([[1.0], [2.0]]))
    rep = D.judge_direction(pipe, dirs[0], src, MeanColourJudge(), istd_samples=0)
    assert set(rep["changes"]) == {"shape", "colour", "size", "position"}
    path = D.save_directions(dirs, tmp_path / "nc.safetensors", model="tiny")
    back = D.load_directions(path, h_shape=(16, 8, 8))
    assert [(d.id, d.name, d.kind) for d in back] == [(d.id, d.name, d.kind) for d in dirs]
    np.testing.assert_array_equal(back[1].vectors, dirs[1].vectors)
    assert back[0].meta["method"] == "noiseclr" and back[0].meta["steps"] == 3
    h = NC.induced_h_directions(pipe, dirs, images, 500)
    assert h.shape == (2, int(np.prod(src.h_shape))) and np.allclose(np.linalg.norm(h, axis=1), 1, atol=1e-4)


def test_stable_diffusion_code_path(tmp_path):
    pytest.importorskip("transformers")
    from backends.generative.sd import load_diffusers_pipeline
    from tiny_sd import write_tiny_sd

    for xl in (False, True):
        sd = load_diffusers_pipeline(str(write_tiny_sd(tmp_path / f"sd{int(xl)}", xl=xl)))
        src = hspace.generate(sd, ["a cat", "a dog"], seeds=0, steps=2)
        res = NC.train_noiseclr(sd, src.images, k=2, steps=2, batch_size=2)
        assert len(res.losses) == 2 and np.isfinite(res.losses).all()
        dirs = NC.to_directions(sd, res)
        assert NC._pools_states(NC.null_embeds(sd)) is (not xl)  # SDXL's pooled vector is its encoder's own
        out = D.render(sd, src, dirs[:1], np.full((2, 1), 1.0))
        assert out.shape == src.images.shape
        # a prompt-pair text direction too (SDXL's pooled vector has another width: it is kept)
        td = D.text_direction(sd, "a cat", "a dog")
        assert td.h_shape[1] == NC.null_embeds(sd).states.shape[-1]
        assert D.render(sd, src, [td], np.full((2, 1), 1.0)).shape == src.images.shape
