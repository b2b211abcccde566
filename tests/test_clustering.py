"""Clustering backends: recovery of known groups, k estimation, few-shot propagation, names, bad input."""
import numpy as np
import pandas as pd
import pytest

from backends.cache import ArtifactCache
from backends.clusters.clustering import (
    MAX_AGGLOMERATIVE,
    ClusterParams,
    attach_cluster_column,
    confusion,
    estimate_k,
    evaluate,
    factor_columns,
    kmeans,
    label_metrics,
    majority_metadata,
    majority_name,
    propagate_labels,
    propagation_accuracy,
    run_clustering,
    sample_labelled,
)
from backends.errors import InputError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    import faiss
    import torch

    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    from backends.corpora.corpus import load_corpus

    c = load_corpus("digits")
    return c, c.meta["label"].to_numpy()


def blobs(k=6, n=600, d=10, seed=0):
    """Well-separated Gaussian blobs: centres on a simplex-like grid 12 standard deviations apart."""
    rng = np.random.default_rng(seed)
    centres = np.eye(k, d) * 12.0 + rng.normal(size=(k, d)) * 0.5
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_kmeans_on_digits_umap_reduction_recovers_labels(digits, session_cache):
    corpus, y = digits
    res = run_clustering(corpus.vectors, ClusterParams(method="kmeans", k=10, space="umap", dims=10),
                         cache=ArtifactCache(session_cache), fingerprint=corpus.fingerprint)
    m = label_metrics(res.labels, y)
    print(f"digits k-means on 10-d UMAP: NMI {m['nmi']:.3f} ARI {m['ari']:.3f} purity {m['purity']:.3f}")
    assert res.k == 10 and res.labels.shape == (len(y),)
    assert m["nmi"] >= 0.8
    assert res.silhouette_space > 0.3  # well separated in the space it clustered in
    assert -1 <= res.silhouette <= 1
    # second call: read from the cache, same labels
    again = run_clustering(corpus.vectors, ClusterParams(method="kmeans", k=10, space="umap", dims=10),
                           cache=ArtifactCache(session_cache), fingerprint=corpus.fingerprint)
    np.testing.assert_array_equal(again.labels, res.labels)


def test_faiss_kmeans_objective_beats_random_partition(digits):
    corpus, y = digits
    labels, cents, inertia = kmeans(corpus.vectors, 10, n_init=3, seed=0)
    assert cents.shape == (10, 64) and labels.min() == 0 and labels.max() == 9
    rnd = np.random.default_rng(0).integers(0, 10, len(labels))
    rnd_inertia = sum(((corpus.vectors[rnd == c] - corpus.vectors[rnd == c].mean(0)) ** 2).sum() for c in range(10))
    assert inertia < 0.6 * rnd_inertia
    assert label_metrics(labels, y)["nmi"] > 0.6  # pixels alone: k-means is decent, not great


@pytest.mark.parametrize("estimator", ["silhouette", "eigengap"])
@pytest.mark.parametrize("k_true", [3, 6])
def test_k_estimation_finds_k_on_separated_blobs(estimator, k_true):
    x, _ = blobs(k=k_true, seed=k_true)
    curve = estimate_k(x, 2, 10, estimator=estimator)
    assert curve["best"] == k_true, curve
    assert curve["k"] == list(range(2, 11)) and len(curve["score"]) == 9


def test_run_with_estimated_k_returns_curve_and_perfect_metrics():
    x, y = blobs(k=5, seed=1)
    res = run_clustering(x, ClusterParams(k=0, k_min=2, k_max=9, metric="euclidean"))
    assert res.k == 5 and res.curve["best"] == 5
    m = label_metrics(res.labels, y)
    assert m["nmi"] > 0.99 and m["ari"] > 0.99 and m["purity"] == 1.0
    assert res.silhouette > 0.6
    assert sorted(res.sizes.tolist(), reverse=True) == res.sizes.tolist()  # clusters numbered by size


def test_hdbscan_and_agglomerative_on_blobs():
    x, y = blobs(k=4, n=400, d=30, seed=2)
    h = run_clustering(x, ClusterParams(method="hdbscan", metric="euclidean", min_cluster_size=15))
    assert h.k == 4 and label_metrics(h.labels, y)["ari"] > 0.95
    assert any("PCA" in n for n in h.notes)  # 30 dims → reduced before HDBSCAN
    a = run_clustering(x, ClusterParams(method="agglomerative", k=4, metric="euclidean"))
    assert label_metrics(a.labels, y)["ari"] > 0.99
    a2 = run_clustering(x, ClusterParams(method="agglomerative", k=0, k_max=8, metric="euclidean"))
    assert a2.k == 4 and a2.curve is not None


def test_metrics_confusion_and_majorities():
    pred = np.array([0, 0, 0, 1, 1, 1, -1])
    truth = np.array(["a", "a", "b", "b", "b", "b", "a"])
    m = label_metrics(pred, truth)
    assert m["purity"] == pytest.approx(6 / 7)
    ct = confusion(pred, truth)
    assert ct.loc[0, "a"] == 2 and ct.loc[1, "b"] == 3 and ct.loc[-1, "a"] == 1
    meta = pd.DataFrame({"id": [str(i) for i in range(7)], "colour": truth, "x": np.linspace(0, 1, 7),
                         "caption": [f"text {i}" for i in range(7)]})
    assert factor_columns(meta) == ["colour"]  # not the float column, not the free text
    maj = majority_metadata(pred, meta)
    assert maj[0]["colour"] == ("a", pytest.approx(2 / 3)) and maj[1]["colour"] == ("b", 1.0)
    assert majority_name(maj[1]) == "colour=b (100%)"
    assert set(evaluate(pred, meta)) == {"colour"}


@pytest.mark.parametrize("method,threshold", [("spreading", 0.9), ("kmeans", 0.75)])
def test_few_shot_propagation_on_digits(digits, method, threshold):
    corpus, y = digits
    labelled = sample_labelled(y, 5, seed=0)
    assert len(labelled) == 50
    out = propagate_labels(corpus.vectors, labelled, y[labelled], method=method)
    acc = propagation_accuracy(out["pred"], y, labelled)
    print(f"digits, 5 labels per class, {method}: accuracy {acc:.3f} on the other {len(y) - 50} points")
    assert acc >= threshold
    assert (out["pred"][labelled].astype(str) == y[labelled].astype(str)).all()
    assert out["confidence"].shape == (len(y),) and out["confidence"].max() <= 1.0


def test_bad_inputs_name_the_argument():
    x, _ = blobs(k=3, n=30)
    with pytest.raises(InputError, match=r"k must be at most the number of points \(30\), but is 31"):
        run_clustering(x, ClusterParams(k=31))
    with pytest.raises(InputError, match="k must be at least 2, but is 1"):
        run_clustering(x, ClusterParams(k=1))
    with pytest.raises(InputError, match="at least 2 points, but there is 1"):
        run_clustering(x[:1], ClusterParams(k=2))
    with pytest.raises(InputError, match="all 5 points are identical"):
        run_clustering(np.ones((5, 3)), ClusterParams(k=2))
    with pytest.raises(InputError, match="NaN"):
        bad = x.copy()
        bad[3, 1] = np.nan
        run_clustering(bad, ClusterParams(k=2))
    with pytest.raises(InputError, match="method must be one of"):
        run_clustering(x, ClusterParams(method="dbscan"))
    with pytest.raises(InputError, match="k_max must be at least k_min"):
        run_clustering(x, ClusterParams(k=0, k_min=5, k_max=3))
    with pytest.raises(InputError, match="k must be a whole number"):
        run_clustering(x, ClusterParams(k="many"))
    with pytest.raises(InputError, match="min_cluster_size"):
        run_clustering(x, ClusterParams(method="hdbscan", min_cluster_size=1))
    with pytest.raises(InputError, match="use metric 'euclidean'"):
        run_clustering(np.array([[1, 0], [2, 0], [3, 0]]), ClusterParams(k=2))  # same direction: cosine sees one point
    with pytest.raises(InputError, match="10-d UMAP reduction needs at least 13 points"):
        run_clustering(x[:8], ClusterParams(k=2, space="umap", dims=10))
    tiny = run_clustering(x[:6], ClusterParams(k=0, estimator="eigengap"))  # k range clipped to the points
    assert 2 <= tiny.k <= 5
    big = np.random.default_rng(0).normal(size=(MAX_AGGLOMERATIVE + 1, 2)).astype(np.float32)
    with pytest.raises(InputError, match="agglomerative clustering is limited to"):
        run_clustering(big, ClusterParams(method="agglomerative", k=3))
    with pytest.raises(InputError, match="at least 2 different labels"):
        propagate_labels(x, [0, 1], ["a", "a"])


def test_attach_cluster_column_for_the_atlas(digits):
    from backends.corpora.corpus import Corpus

    corpus, _ = digits
    mine = Corpus("copy", corpus.vectors, corpus.meta.copy())
    labels = np.arange(len(mine)) % 3
    labels[0] = -1
    assert attach_cluster_column(mine, "cluster", labels) == "cluster"
    assert "cluster" in mine.metadata_columns()
    assert mine.meta["cluster"].iat[0] == "noise" and mine.meta["cluster"].iat[1] == "1"
    attach_cluster_column(mine, "cluster", np.zeros(len(mine), int))  # replacing a cluster column is fine
    with pytest.raises(InputError, match="name must start with 'cluster'"):
        attach_cluster_column(mine, "label", labels)
    with pytest.raises(InputError, match="labels: 3 labels"):
        attach_cluster_column(mine, "cluster2", labels[:3])


def test_names_from_a_text_space_and_a_goal():
    """A stub text–image space where each description's vector is the sum of its words' directions."""
    from backends.clusters.names import Candidate, TextSpace, goal_factors, name_clusters

    words = ["red", "blue", "circle", "square", "small", "large"]

    def enc(texts):
        v = np.array([[float(w in t.split()) for w in words] for t in texts], np.float32) + 1e-3
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    cands = [Candidate("red shapes", ("colour",)), Candidate("blue shapes", ("colour",)),
             Candidate("a red circle", ("colour", "shape")), Candidate("a blue square", ("colour", "shape")),
             Candidate("small shapes", ("size",)), Candidate("a circle", ("shape",))]
    space = TextSpace("stub", enc, cands)
    centroids = enc(["red circle small", "blue square large"])
    names = name_clusters(centroids, space)
    assert names[0][0][0] == "a red circle" and names[1][0][0] == "a blue square"
    assert goal_factors("group by colour") == ["colour"] and goal_factors("by color please") == ["colour"]
    by_colour = name_clusters(centroids, space, goal="group by colour")
    assert by_colour[0][0][0] == "red shapes" and by_colour[1][0][0] == "blue shapes"
    by_size = name_clusters(centroids, space, goal="what size are they")
    assert by_size[0][0][0] == "small shapes"
    free = name_clusters(centroids, space, goal="something round", goal_encoder=enc)
    assert len(free[0]) == 3


def test_shapes_single_objects_cluster_by_colour_in_encoder_space():
    from backends.shapes.encoders import weights_path

    if not weights_path("shapes-cnn").exists():
        pytest.skip(f"Shapes encoder weights are not in assets/ yet ({weights_path('shapes-cnn')} missing)")
    from backends.clusters.names import goal_features, text_space_for
    from backends.corpora.corpus import Corpus
    from backends.shapes import scenes
    from backends.shapes.encoders import load_image_encoder

    batch = scenes.make_batch(800, seed=3, split="test", size=64, single=True)
    enc = load_image_encoder("shapes-cnn")
    v = enc.encode_images(batch.images)
    colour = batch.factors["colour"].to_numpy()
    plain = run_clustering(v, ClusterParams(k=8, n_init=5))
    nmi_plain = label_metrics(plain.labels, colour)["nmi"]
    corpus = Corpus("shapes", v, batch.factors[["colour"]].copy(), description="shapes-cnn")
    space = text_space_for(corpus)
    feats, _ = goal_features(v, space, "group by colour")
    goal = run_clustering(feats, ClusterParams(k=8, metric="euclidean", n_init=5))
    nmi_goal = label_metrics(goal.labels, colour)["nmi"]
    print(f"Shapes single objects, k=8 vs colour: NMI {nmi_plain:.3f} on encoder vectors, "
          f"{nmi_goal:.3f} on goal features ('group by colour')")
    assert max(nmi_plain, nmi_goal) >= 0.9
    # names: with the goal "colour", each cluster's best description names its majority colour
    from backends.clusters.clustering import majority_metadata
    from backends.clusters.names import name_clusters

    names = name_clusters(goal.centroids if goal.centroids.shape[1] == v.shape[1] else
                          np.stack([v[goal.labels == c].mean(0) for c in range(goal.k)]), space, goal="by colour")
    majority = majority_metadata(goal.labels, batch.factors, ["colour"])
    right = sum(majority[c]["colour"][0] in names[c][0][0].split() for c in range(goal.k))
    print(f"names: {right}/{goal.k} clusters named by their majority colour")
    assert right >= goal.k - 1


def test_a_seed_faiss_cannot_take_is_named():
    import numpy as np
    import pytest

    from backends.clusters.clustering import ClusterParams, run_clustering
    from backends.errors import InputError

    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(InputError, match="seed must be between 0 and 2,000,000, but is 2147484"):
        run_clustering(x, ClusterParams(k=3, seed=2_147_484))
