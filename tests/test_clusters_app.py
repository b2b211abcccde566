"""The Clusters tab through its named API endpoints, against the launched app (what gradio_client users do)."""
import numpy as np
import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(atlas_app):
    import faiss

    faiss.omp_set_num_threads(1)
    url, _ = atlas_app
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def blobs_key(client, tmp_path_factory):
    """An uploaded corpus of 4 well-separated blobs (so attaching a column does not touch shared corpora)."""
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    y = np.repeat(np.arange(4), 30)
    v = (centres[y] + rng.normal(size=(120, 8))).astype(np.float32)
    path = tmp_path_factory.mktemp("clusters") / "blobs.npy"
    np.save(path, v)
    return client.predict(handle_file(str(path)), api_name="/atlas_upload"), y


def test_api_lists_every_clusters_action(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ("clusters_run", "clusters_estimate_k", "clusters_names", "clusters_metrics", "clusters_gallery",
                 "clusters_attach", "clusters_sample_labels", "clusters_propagate", "clusters_more_like_this"):
        assert f"/{name}" in names


def test_run_names_metrics_gallery_on_digits(client):
    out = client.predict("digits", "kmeans", 10, "original", 10, "euclidean", 10, 0, "silhouette", 2, 15, "",
                         api_name="/clusters_run")
    assert out["k"] == 10 and len(out["labels"]) == 1797 and len(out["ids"]) == 1797
    assert out["metrics"]["label"]["nmi"] > 0.6 and -1 <= out["silhouette"] <= 1
    run = out["run"]
    names = client.predict(run, "", api_name="/clusters_names")
    assert len(names) == 10 and all(n["majority"].startswith(("label=", "mixed")) for n in names)
    assert sum(n["size"] for n in names) == 1797
    metrics = client.predict(run, api_name="/clusters_metrics")
    conf = metrics["confusion"]["label"]
    assert sum(sum(row.values()) for row in conf.values()) == 1797
    ids = client.predict(run, 0, 12, api_name="/clusters_gallery")
    labels = dict(zip(out["ids"], out["labels"]))
    assert len(ids) == 12 and all(labels[i] == 0 for i in ids)


def test_estimate_k_and_attach_on_blobs(client, blobs_key):
    key, y = blobs_key
    curve = client.predict(key, 2, 8, "eigengap", "kmeans", "original", 10, "euclidean",
                           api_name="/clusters_estimate_k")
    assert curve["best"] == 4 and curve["k"] == list(range(2, 9))
    out = client.predict(key, "kmeans", 0, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                         api_name="/clusters_run")
    assert out["k"] == 4 and out["curve"]["best"] == 4
    col = client.predict(out["run"], "cluster", api_name="/clusters_attach")
    assert col == "cluster"
    # the Atlas sees the new column: search by it
    hits = client.predict(key, "cluster=0", False, api_name="/atlas_search")
    labels = np.array(out["labels"])
    assert sorted(hits) == sorted(np.array(out["ids"])[labels == 0].tolist())


def test_few_shot_propagation_reports_accuracy(client):
    text = client.predict("digits", "label", 5, 0, api_name="/clusters_sample_labels")
    assert len(text.splitlines()) == 50 and "=" in text
    out = client.predict("digits", text, "spreading", "original", "label", api_name="/clusters_propagate")
    assert out["n_labelled"] == 50 and len(out["predictions"]) == 1797
    assert out["accuracy"] >= 0.9


def test_bad_input_gives_a_message(client, blobs_key):
    key, _ = blobs_key
    with pytest.raises(Exception, match=r"k must be at most the number of points \(120\), but is 500"):
        client.predict(key, "kmeans", 500, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                       api_name="/clusters_run")
    with pytest.raises(Exception, match="k must be at least 2, but is 1"):
        client.predict(key, "kmeans", 1, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                       api_name="/clusters_run")
    with pytest.raises(Exception, match="method must be one of"):
        client.predict(key, "spectral", 3, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                       api_name="/clusters_run")
    with pytest.raises(Exception, match="is not loaded"):
        client.predict("nope", "", api_name="/clusters_names")
    with pytest.raises(Exception, match="no item with id 'zzz'"):
        client.predict("digits", "zzz=1\ndigit-0001=2", "spreading", "original", "", api_name="/clusters_propagate")
    with pytest.raises(Exception, match="space 'goal' needs a text"):
        client.predict("digits", "kmeans", 3, "goal", 10, "euclidean", 10, 0, "silhouette", 2, 8, "by colour",
                       api_name="/clusters_run")
    run = client.predict(key, "kmeans", 4, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                         api_name="/clusters_run")["run"]
    with pytest.raises(Exception, match="needs a Shapes corpus"):
        client.predict(run, 0, 4, 0, api_name="/clusters_more_like_this")
    with pytest.raises(Exception, match=r"cluster must be between 0 and 3, but is 9"):
        client.predict(run, 9, 4, 0, api_name="/clusters_more_like_this")
    from backends.shapes.encoders import weights_path

    if not weights_path("shapes-cnn").exists():  # a missing model is a message, not a crash
        with pytest.raises(Exception, match="weights"):
            client.predict("shapes", "kmeans", 3, "original", 10, "cosine", 10, 0, "silhouette", 2, 8, "",
                           api_name="/clusters_run")
    # the server keeps serving
    assert client.predict(key, "kmeans", 4, "original", 10, "euclidean", 10, 0, "silhouette", 2, 8, "",
                          api_name="/clusters_run")["k"] == 4

