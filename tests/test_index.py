import numpy as np
import pytest

from backends.corpora.index import VectorIndex, brute_force_knn
from backends.errors import InputError


def clustered(n, d, seed=0, centers=50, intrinsic=12):
    """Embedding-like data: a mixture in a 12-d latent, mapped linearly to d dims, plus small noise."""
    world = np.random.default_rng(1234)  # the same clusters and map for every seed
    c = world.normal(size=(centers, intrinsic)) * 3
    w = world.normal(size=(intrinsic, d)) / np.sqrt(intrinsic)
    rng = np.random.default_rng(seed)
    z = c[rng.integers(0, centers, n)] + rng.normal(size=(n, intrinsic))
    return (z @ w + 0.05 * rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_hnsw_recall_at_10_against_brute_force(metric):
    x = clustered(30_000, 64)
    q = clustered(500, 64, seed=1)
    index = VectorIndex(x, metric=metric)  # default settings: HNSW above the exact threshold
    assert index.kind == "hnsw"
    _, got = index.search(q, 10)
    _, truth = brute_force_knn(x, q, 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)])
    assert recall >= 0.98, recall


def test_exact_below_threshold_matches_brute_force_distances():
    x = clustered(2_000, 16)
    index = VectorIndex(x, metric="euclidean")
    assert index.kind == "flat"
    d, i = index.search(x[:20], 5)
    bd, bi = brute_force_knn(x, x[:20], 5, "euclidean")
    np.testing.assert_allclose(d, bd, rtol=1e-3, atol=1e-2)  # brute force expands |a-b|² in float32
    assert (i[:, 0] == np.arange(20)).all()


def test_knn_graph_puts_self_first_even_for_duplicates():
    x = clustered(500, 8)
    x[1] = x[0]  # exact duplicate: faiss may return either first
    idx, dist = VectorIndex(x, metric="cosine").knn_graph(x, 6)
    assert (idx[:, 0] == np.arange(500)).all()
    assert (dist[:, 0] == 0).all() and (dist >= 0).all()
    assert all(len(set(row)) == 6 for row in idx)


def test_bad_queries_have_clear_messages():
    index = VectorIndex(clustered(100, 8))
    with pytest.raises(InputError, match="dimensions"):
        index.search(np.zeros((1, 9), np.float32), 3)
    with pytest.raises(InputError, match="k must be"):
        index.search(np.zeros((1, 8), np.float32), 0)
    with pytest.raises(InputError, match="metric"):
        VectorIndex(clustered(10, 8), metric="manhattan")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ivf_knn_graph_recall_against_brute_force(metric):
    from backends.corpora.index import knn_graph

    x = clustered(30_000, 64)
    idx, dist = knn_graph(x, 10, metric=metric)  # above the exact threshold: the IVF path
    assert (idx[:, 0] == np.arange(len(x))).all() and (dist[:, 0] == 0).all()
    sample = np.random.default_rng(0).choice(len(x), 500, replace=False)
    _, truth = brute_force_knn(x, x[sample], 10, metric)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx[sample], truth)])
    assert recall >= 0.98, recall
    assert (np.diff(dist[sample], axis=1) >= -1e-5).all()  # nearest first
