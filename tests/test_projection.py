import threading

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness

from backends.cache import ArtifactCache
from backends.corpora.projection import ProjectionParams, project
from backends.errors import InputError


@pytest.fixture(scope="module")
def digits():
    return load_digits().data.astype(np.float32)


def test_umap_on_faiss_knn_is_trustworthy_on_digits(digits, session_cache):
    xy = project(digits, ProjectionParams(method="umap", metric="euclidean"), cache=ArtifactCache(session_cache))
    assert xy.shape == (len(digits), 2) and np.isfinite(xy).all()
    assert trustworthiness(digits, xy, n_neighbors=10) >= 0.9


def test_pca_projection_and_cache_hit(digits, tmp_path):
    cache = ArtifactCache(tmp_path)
    calls = []
    xy1 = project(digits, ProjectionParams(method="pca"), cache=cache, progress=lambda f, m: calls.append(m))
    xy2 = project(digits, ProjectionParams(method="pca"), cache=cache, progress=lambda f, m: calls.append(m))
    np.testing.assert_array_equal(xy1, xy2)
    assert calls.count("PCA") == 1  # the second call read the cache
    assert len(list((tmp_path / "projections").glob("*.npz"))) == 1


def test_same_projection_requested_at_once_is_computed_once(digits, tmp_path):
    cache = ArtifactCache(tmp_path)
    computed = []
    results = []

    def work():
        results.append(project(digits[:300], ProjectionParams(method="pca"), cache=cache,
                               progress=lambda f, m: computed.append(m) if m == "PCA" else None))

    threads = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(results) == 6 and computed == ["PCA"]
    assert all(np.array_equal(results[0], r) for r in results)


@pytest.mark.parametrize("params,msg", [
    (ProjectionParams(method="tsne"), "method"),
    (ProjectionParams(n_neighbors=1), "n_neighbors"),
    (ProjectionParams(min_dist=2.0), "min_dist"),
    (ProjectionParams(metric="hamming"), "metric"),
])
def test_bad_parameters_are_named(digits, params, msg):
    with pytest.raises(InputError, match=msg):
        project(digits[:50], params)


def test_pca_of_a_large_corpus_matches_a_full_pca_without_a_centred_copy(monkeypatch):
    """Above 20,000 rows the PCA map comes from a covariance pass over blocks (and, above PCA_SAMPLE
    rows, axes from a sample): the same map as scikit-learn's PCA of all rows, up to each axis's sign."""
    from sklearn.decomposition import PCA

    from backends.corpora import projection as P

    rng = np.random.default_rng(0)
    scales = np.r_[8.0, 4.0, np.linspace(1.5, 0.1, 38)]  # two clear axes, then the rest
    x = (rng.standard_normal((30_000, 40)) * scales + 5).astype(np.float32)  # off-centre
    full = PCA(2).fit_transform(x.astype(np.float64))
    for sample in (P.PCA_SAMPLE, 10_000):  # all rows; axes from a third of them
        monkeypatch.setattr(P, "PCA_SAMPLE", sample)
        monkeypatch.setattr(P, "PCA_CHUNK", 4_096)  # several blocks
        ours = P.pca_2d(x)
        assert ours.dtype == np.float32 and ours.shape == (30_000, 2)
        for j in range(2):
            assert abs(np.corrcoef(ours[:, j], full[:, j])[0, 1]) > 0.999, (sample, j)
            scale = np.abs(full[:, j]).max()
            assert np.abs(np.abs(ours[:, j]) - np.abs(full[:, j])).max() < (1e-3 if sample > 30_000 else 0.05) * scale
