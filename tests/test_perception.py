"""Synthetic tasks and agreement measures: properties, not exact numbers."""
import numpy as np
import pytest

from backends.clusters.perception import (
    MixtureParams,
    corpus_task_specs,
    gaussian_mixture,
    krippendorff_alpha_comembership,
    leaderboard,
    pairwise_ari,
    partition_labels,
    plot_agreement,
    pointwise_agreement,
    synthetic_task_specs,
)
from backends.errors import InputError


def test_mixture_controls_point_count_clusters_noise():
    xy, truth = gaussian_mixture(MixtureParams(n_points=300, n_clusters=4, separation=8, noise_fraction=0.1, seed=3))
    assert xy.shape == (300, 2) and xy.dtype == np.float32
    assert np.abs(xy).max() <= 1.0 + 1e-6
    assert (truth == -1).sum() == 30
    assert set(np.unique(truth[truth >= 0])) == {0, 1, 2, 3}
    again, _ = gaussian_mixture(MixtureParams(n_points=300, n_clusters=4, separation=8, noise_fraction=0.1, seed=3))
    np.testing.assert_array_equal(xy, again)  # deterministic from the seed


def test_separation_makes_clusters_easier():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    def score(sep):
        aris = []
        for seed in range(4):
            xy, t = gaussian_mixture(MixtureParams(n_points=200, n_clusters=3, separation=sep, seed=seed))
            aris.append(adjusted_rand_score(t, KMeans(3, n_init=3, random_state=0).fit_predict(xy)))
        return np.mean(aris)

    assert score(10.0) > 0.95 > score(0.5)


def test_density_ratio_is_exact():
    xy, t = gaussian_mixture(MixtureParams(n_points=600, n_clusters=2, separation=12, density_ratio=9, seed=1))
    sizes = np.bincount(t)
    assert sizes.max() / sizes.min() == pytest.approx(3.0, rel=0.2)  # half the contrast from point counts


def test_bad_params_are_rejected_with_the_argument_named():
    with pytest.raises(InputError, match="n_points"):
        gaussian_mixture(MixtureParams(n_points=5))
    with pytest.raises(InputError, match="noise_fraction"):
        gaussian_mixture(MixtureParams(noise_fraction=2))


def test_task_specs():
    specs = synthetic_task_specs(4, seed=1, points=(50, 60), clusters=(2, 3))
    assert len(specs) == 4 and all(50 <= len(s.xy) <= 60 for s in specs)
    assert all(s.meta["n_clusters"] in (2, 3) for s in specs)
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(500, 2))
    cs = corpus_task_specs(xy, [f"item{i}" for i in range(500)], 3, points=80, window=0.3, labels=rng.integers(0, 4, 500))
    assert [len(s.xy) for s in cs] == [80, 80, 80]
    assert all(sid.startswith("item") for sid in cs[0].source_ids) and len(cs[0].truth) == 80


def test_identical_partitions_agree_perfectly():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, 150)
    parts = [lab.copy() for _ in range(5)]
    _, ari = pairwise_ari(parts)
    assert ari == pytest.approx(1.0)
    assert krippendorff_alpha_comembership(parts) == pytest.approx(1.0)
    np.testing.assert_allclose(pointwise_agreement(parts), 1.0)
    relabelled = [lab, (lab + 1) % 4]  # names of groups do not matter
    assert krippendorff_alpha_comembership(relabelled) == pytest.approx(1.0)


def test_random_partitions_agree_near_zero():
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 3, 300) for _ in range(6)]
    _, ari = pairwise_ari(parts)
    alpha = krippendorff_alpha_comembership(parts)
    assert abs(ari) < 0.03 and abs(alpha) < 0.03
    assert pointwise_agreement(parts).mean() < 0.4


def test_alpha_matches_textbook_formula_on_a_small_case():
    # 3 points → 3 pairs; coder A: {0,1},{2}; coder B: all apart. Pairs (01, 02, 12): A=1,0,0; B=0,0,0.
    # values n=6, n1=1, n0=5; o01 = 1·1/(2−1) = 1 → α = 1 − 5·1/(5·1) = 0
    a = np.array([0, 0, 1])
    b = np.array([0, 1, 2])
    assert krippendorff_alpha_comembership([a, b]) == pytest.approx(0.0)


def test_noise_and_unassigned_are_singletons():
    g = {"cluster 1": [0, 1], "noise": [2, 3]}
    lab = partition_labels(g, 5)
    assert lab[0] == lab[1] and len({lab[2], lab[3], lab[4], lab[0]}) == 4
    summary = plot_agreement([g, g], 5)
    assert summary["annotators"] == 2 and summary["mean_pairwise_ari"] == pytest.approx(1.0)


def test_leaderboard_ranks_methods_against_people():
    xy, t = gaussian_mixture(MixtureParams(n_points=150, n_clusters=3, separation=10, seed=2))
    truth = {f"cluster {c + 1}": np.flatnonzero(t == c).tolist() for c in range(3)}
    board = leaderboard([(xy, [truth, truth])])
    assert set(board["method"]) == {"k-means", "DBSCAN", "HDBSCAN", "Gaussian mixture", "annotators (leave-one-out)"}
    with_truth = leaderboard([(xy, [truth, truth], t)])
    assert with_truth.loc[with_truth.method == "generator truth", "mean_ari"].item() == pytest.approx(1.0)
    assert board.loc[board.method == "k-means", "mean_ari"].item() > 0.9
    assert board.iloc[0]["mean_ari"] >= board.iloc[-1]["mean_ari"]
