"""UMAP on a sample, the rest placed by their nearest sample rows: close to a full fit, cost of the sample."""
import numpy as np
import pytest

from backends.corpora.projection import ProjectionParams, place_by_neighbours, project
from backends.errors import InputError


def _blobs(n=4000, d=24, k=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 4
    lab = rng.integers(0, k, n)
    return (centres[lab] + rng.normal(size=(n, d))).astype(np.float32), lab


def test_a_sampled_map_keeps_neighbourhoods_nearly_as_well_as_a_full_fit():
    from sklearn.manifold import trustworthiness

    x, lab = _blobs()
    full = project(x, ProjectionParams(sample=0))
    sampled = project(x, ProjectionParams(sample=1200))
    assert sampled.shape == (4000, 2) and np.isfinite(sampled).all()
    sub = np.random.default_rng(1).choice(len(x), 1200, replace=False)
    t_full = trustworthiness(x[sub], full[sub], n_neighbors=10)
    t_sampled = trustworthiness(x[sub], sampled[sub], n_neighbors=10)
    assert t_sampled >= t_full - 0.03, (t_full, t_sampled)
    # the placed rows land with their own blob: nearest map neighbours share the label
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=6).fit(sampled)
    _, i = nn.kneighbors(sampled[sub])
    assert (lab[i[:, 1:]] == lab[sub, None]).mean() > 0.9


def test_placement_is_the_weighted_mean_of_the_nearest_fitted_positions():
    fitted = np.eye(4, dtype=np.float32) * 10
    xy = np.asarray([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
    out = place_by_neighbours(fitted, xy, fitted[[2]] + 0.01, metric="euclidean", k=2)
    assert np.allclose(out[0], xy[2], atol=0.05)  # on top of a fitted row: its position


def test_small_corpora_keep_their_cache_key_and_bad_samples_are_named(tmp_path):
    from backends.cache import ArtifactCache

    cache = ArtifactCache(tmp_path)
    x, _ = _blobs(n=300)
    a = project(x, ProjectionParams(method="pca"), cache=cache, fingerprint="f")
    b = project(x, ProjectionParams(method="pca", sample=5000), cache=cache, fingerprint="f")
    assert np.array_equal(a, b) and len(list((tmp_path / "projections").glob("*"))) >= 1
    with pytest.raises(InputError, match="sample must be 0"):
        project(x, ProjectionParams(sample=10))
