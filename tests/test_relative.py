"""Relative representations: anchors, projection, metrics and the Procrustes baseline (synthetic data)."""
import numpy as np
import pytest

from backends.errors import InputError
from backends.representations import relative as rel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    torch.set_num_threads(1)


def blobs(n=600, d=24, c=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = (rng.normal(size=(c, d)) * 2.5)[y] + rng.normal(size=(n, d))
    return x.astype(np.float32), y


def rotated(x, seed=1, scale=3.0, noise=0.01):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
    return (scale * x @ q + noise * rng.normal(size=x.shape)).astype(np.float32), q


def test_relative_projection_is_cosine_to_anchors():
    x, _ = blobs(50)
    r = rel.relative_projection(x, x[:5])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert r.shape == (50, 5) and r.dtype == np.float32
    np.testing.assert_allclose(r, xn @ xn[:5].T, atol=1e-5)
    np.testing.assert_allclose(np.diag(r[:5]), 1.0, atol=1e-5)
    for norm in rel.OUTPUT_NORMS:
        out = rel.relative_projection(x, x[:5], output_norm=norm)
        assert out.shape == (50, 5) and np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(rel.relative_projection(x, x[:5], output_norm="l2"), axis=1), 1, atol=1e-5)


def test_centred_cosine_is_invariant_to_a_shared_offset():
    x, _ = blobs(200)
    shifted, _ = rotated(x + 4.0, noise=0.0)
    r = rel.relative_projection(x, x[:20], mode="centred")
    np.testing.assert_allclose(rel.relative_projection(shifted, shifted[:20], mode="centred"), r, atol=1e-4)
    assert not np.allclose(rel.relative_projection(shifted, shifted[:20]), rel.relative_projection(x, x[:20]), atol=0.05)


def test_change_of_basis_recovers_coefficients():
    rng = np.random.default_rng(0)
    anchors = rng.normal(size=(6, 6)).astype(np.float32)
    coef = rng.normal(size=(20, 6)).astype(np.float32)
    r = rel.relative_projection(coef @ anchors, anchors, mode="basis")
    np.testing.assert_allclose(r, coef, atol=1e-3)


@pytest.mark.parametrize("strategy", rel.ANCHOR_STRATEGIES)
def test_anchor_strategies_give_distinct_items_from_the_candidates(strategy):
    x, y = blobs()
    cand = np.arange(0, 600, 2)
    idx = rel.select_anchors(x, 40, strategy=strategy, labels=y, seed=0, candidates=cand)
    assert len(idx) == 40 and len(np.unique(idx)) == 40 and np.isin(idx, cand).all()
    assert (idx == rel.select_anchors(x, 40, strategy=strategy, labels=y, seed=0, candidates=cand)).all()


def test_stratified_and_kmeans_anchors_cover_every_cluster():
    x, y = blobs()
    strat = rel.select_anchors(x, 16, strategy="stratified", labels=y)
    assert np.bincount(y[strat], minlength=8).min() == 2
    km = rel.select_anchors(x, 16, strategy="kmeans", seed=0)
    assert len(np.unique(y[km])) == 8
    fps = rel.select_anchors(x, 16, strategy="farthest", seed=0)
    assert len(np.unique(y[fps])) >= 7


def test_relative_is_invariant_to_rotation_and_rescaling_absolute_is_not():
    x, _ = blobs()
    xb, _ = rotated(x)
    idx = rel.select_anchors(x, 100, strategy="random", seed=0)
    out = rel.compare(x, xb, idx, k=10)
    a, r = out["absolute"], out["relative"]
    assert r["jaccard"] > 0.95 and r["mrr"] > 0.99 and r["cosine"] > 0.99
    assert a["jaccard"] < 0.1 and a["mrr"] < 0.1 and abs(a["cosine"]) < 0.3
    assert a["cka"] > 0.99 and r["cka"] > 0.99  # CKA is itself rotation invariant
    assert a["knn_overlap"] > 0.95  # neighbourhoods within each space survive an isometry


def test_relative_jaccard_and_mrr_are_chance_for_unrelated_spaces():
    x, _ = blobs(seed=0)
    other = np.random.default_rng(5).normal(size=x.shape).astype(np.float32)
    idx = np.arange(50)
    m = rel.similarity_metrics(rel.relative_projection(x, x[idx]), rel.relative_projection(other, other[idx]), k=10)
    assert m["jaccard"] < 0.1 and m["mrr"] < 0.1


def test_procrustes_recovers_a_rotation_from_anchor_pairs():
    x, _ = blobs()
    xb, q = rotated(x, noise=0.0)
    idx = rel.select_anchors(x, 60, strategy="random", seed=1)
    p = rel.Procrustes().fit(x[idx], xb[idx])
    np.testing.assert_allclose(p.rotation_, q, atol=1e-3)
    np.testing.assert_allclose(p.transform(x), xb, atol=1e-2 * np.abs(xb).max())
    # different dimensionalities are zero-padded, and still map well when B is A in a subspace
    x_small = x[:, :16]
    x_big = np.concatenate([x_small, np.zeros((len(x), 8), np.float32)], 1) @ np.linalg.qr(
        np.random.default_rng(2).normal(size=(24, 24)))[0]
    t = rel.Procrustes().fit(x_small[idx], x_big[idx]).transform(x_small)
    assert t.shape == x_big.shape
    assert rel.mean_cosine(t, x_big) > 0.99


def test_linear_cka_bounds():
    x, _ = blobs()
    assert rel.linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)
    assert rel.linear_cka(x, 5 * x + 2) == pytest.approx(1.0, abs=1e-6)
    noise = np.random.default_rng(0).normal(size=(600, 24))
    assert rel.linear_cka(x, noise) < 0.2


def test_metrics_across_dimensions_report_nan_for_cross_space_ones():
    x, _ = blobs()
    m = rel.similarity_metrics(x, x[:, :10], k=5)
    assert np.isnan(m["jaccard"]) and np.isnan(m["mrr"]) and np.isnan(m["cosine"])
    assert 0 <= m["cka"] <= 1 and 0 <= m["knn_overlap"] <= 1


@pytest.mark.parametrize("call,message", [
    (lambda x: rel.select_anchors(x, 1), "at least 2 anchors"),
    (lambda x: rel.select_anchors(x, 10_000), "only 600 items"),
    (lambda x: rel.select_anchors(x, 10, strategy="best"), "Unknown anchor strategy"),
    (lambda x: rel.select_anchors(x, 10, strategy="stratified"), "needs labels"),
    (lambda x: rel.relative_projection(x, x[:1]), "at least 2 anchors"),
    (lambda x: rel.relative_projection(x, x[:5, :3]), "same model"),
    (lambda x: rel.relative_projection(x, x[:5], mode="sine"), "Unknown relative projection"),
    (lambda x: rel.compare(x, x[:500], np.arange(10)), "500"),
    (lambda x: rel.compare(x, x, np.array([3])), "at least 2 anchors"),
    (lambda x: rel.compare(x, x, np.array([1, 2, 700])), "700 is not in the corpus"),
    (lambda x: rel.compare(x, x, np.array([1, 1, 2])), "more than once"),
    (lambda x: rel.anchor_indices_from_ids(["a", "zz"], ["a", "b", "c"]), "'zz' is not in the corpus"),
    (lambda x: rel.jaccard_at_k(x, x, k=600), "k must be between"),
    (lambda x: rel.relative_projection(np.full((3, 2), np.nan), x[:2, :2]), "NaN"),
])
def test_bad_input_gets_a_clear_message(call, message):
    x, _ = blobs()
    with pytest.raises(InputError, match=message):
        call(x)
