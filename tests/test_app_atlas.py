"""The Atlas through its named API endpoints, against a launched app (what gradio_client users do)."""
import numpy as np
import pandas as pd
import pytest
from gradio_client import Client, handle_file

from conftest import write_pickled_npy


@pytest.fixture(scope="module")
def client(atlas_app):
    url, _ = atlas_app
    return Client(url, verbose=False)


def test_api_lists_every_atlas_action(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    for name in ("atlas_corpora", "atlas_upload", "atlas_project", "atlas_neighbours", "atlas_search",
                 "atlas_more_like_this", "atlas_custom_axes", "atlas_export"):
        assert f"/{name}" in names


def test_project_then_neighbours_are_same_label_on_digits(client):
    assert "digits" in client.predict(api_name="/atlas_corpora")
    m = client.predict("digits", "umap", 15, 0.1, "euclidean", api_name="/atlas_project")
    assert len(m["ids"]) == 1797 and len(m["x"]) == 1797 and np.isfinite(m["x"]).all()
    rows = client.predict("digits", "digit-0000", 10, "cosine", api_name="/atlas_neighbours")
    assert len(rows) == 10 and "digit-0000" not in {r["id"] for r in rows}
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    assert sum(r["label"] == 0 for r in rows) >= 9  # digit-0000 is a zero


def test_search_more_like_this_axes_and_export(client, tmp_path):
    hits = client.predict("digits", "label=7", False, api_name="/atlas_search")
    assert len(hits) == 179
    assert len(client.predict("digits", r"digit-00[0-4]\d$", True, api_name="/atlas_search")) == 50
    like = client.predict("digits", hits[0], 20, api_name="/atlas_more_like_this")
    assert like[0] == hits[0] and len(like) == 21
    axes = client.predict("digits", "label=0", "label=1", "", "", api_name="/atlas_custom_axes")
    x = np.array(axes["x"])
    labels = np.array([int(i.split("-")[1]) for i in axes["ids"]])  # ids are in corpus order
    assert len(x) == 1797
    path = client.predict("digits", hits[:5], "parquet", "pca", api_name="/atlas_export")
    df = pd.read_parquet(path)
    assert df["id"].tolist() == hits[:5] and {"label", "x", "y"} <= set(df.columns)
    assert (df["label"] == 7).all()
    del labels


def test_custom_axis_separates_zeros_from_ones(client):
    axes = client.predict("digits", "label=0", "label=1", "", "", api_name="/atlas_custom_axes")
    search0 = set(client.predict("digits", "label=0", False, api_name="/atlas_search"))
    search1 = set(client.predict("digits", "label=1", False, api_name="/atlas_search"))
    x = dict(zip(axes["ids"], axes["x"]))
    assert np.median([x[i] for i in search0]) > np.median([x[i] for i in search1]) + 0.2


def test_upload_then_browse(client, tmp_path):
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 6]).astype(np.float32)
    np.save(tmp_path / "mine.npy", v)
    key = client.predict(handle_file(str(tmp_path / "mine.npy")), api_name="/atlas_upload")
    assert key.startswith("upload:")
    assert key in client.predict(api_name="/atlas_corpora")
    rows = client.predict(key, "0", 5, "euclidean", api_name="/atlas_neighbours")
    assert all(int(r["id"]) < 40 for r in rows)  # neighbours of item 0 are in its own blob


@pytest.mark.parametrize("maker,message", [
    (lambda p: write_pickled_npy(p / "bad.npy", np.array([{"a": 1}], dtype=object)), "pickle"),
    (lambda p: np.save(p / "bad.npy", np.array([[1.0, np.nan], [2.0, 3.0], [4, 5]])), "NaN"),
    (lambda p: (p / "bad.npy").write_bytes(b""), "empty"),
])
def test_bad_uploads_get_a_message_and_the_server_keeps_serving(client, tmp_path, maker, message):
    maker(tmp_path)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(tmp_path / "bad.npy")), api_name="/atlas_upload")
    assert "digits" in client.predict(api_name="/atlas_corpora")


def test_oversize_upload_is_refused(client, tmp_path):
    np.save(tmp_path / "big.npy", np.ones((300_000, 2), np.float32) + np.arange(2))  # 2.4 MB > 1 MB limit
    with pytest.raises(Exception, match="exceeds the maximum file size"):  # gradio refuses it before the app
        client.predict(handle_file(str(tmp_path / "big.npy")), api_name="/atlas_upload")
    assert "digits" in client.predict(api_name="/atlas_corpora")


def test_bad_arguments_are_named(client):
    with pytest.raises(Exception, match="no item with id"):
        client.predict("digits", "nope", 5, "cosine", api_name="/atlas_neighbours")
    with pytest.raises(Exception, match="Unknown corpus"):
        client.predict("nope", "x", 5, "cosine", api_name="/atlas_neighbours")
    with pytest.raises(Exception, match="k must be"):
        client.predict("digits", "digit-0001", 0, "cosine", api_name="/atlas_neighbours")


def test_zip_of_images_is_embedded_with_the_active_image_encoder(client, atlas_app, tmp_path):
    import io
    import zipfile

    from PIL import Image

    from backends.shapes import scenes

    batch = scenes.make_batch(12, seed=0, split="test", size=64, single=True)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for i, img in enumerate(batch.images):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            z.writestr(f"scene_{i:02d}.png", buf.getvalue())
        z.writestr("readme.txt", "not an image")
    key = client.predict(handle_file(str(tmp_path / "imgs.zip")), api_name="/atlas_upload")
    corpus = atlas_app[1].corpus(key)
    embedder = atlas_app[1].image_embedder()
    expected_dim = 768 if embedder is None else embedder(batch.images[:1]).shape[1]
    assert len(corpus) == 12 and corpus.dim == expected_dim
    assert any("readme.txt" in n for n in corpus.notes)  # skipped, and said so


def test_upload_of_a_projector_pair_as_two_files(client, tmp_path):
    """The Embedding Projector's vectors.tsv + metadata.tsv through the API as a list of files (no zip)."""
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(size=(30, 4)), rng.normal(size=(30, 4)) + 8])
    (tmp_path / "vectors.tsv").write_text("\n".join("\t".join(f"{x:.5f}" for x in row) for row in v) + "\n")
    labels = ["left"] * 30 + ["right"] * 30
    (tmp_path / "metadata.tsv").write_text("label\tnumber\n" + "\n".join(f"{lab}\t{i}" for i, lab in enumerate(labels)) + "\n")
    key = client.predict([handle_file(str(tmp_path / "vectors.tsv")), handle_file(str(tmp_path / "metadata.tsv"))],
                         api_name="/atlas_upload")
    assert key in client.predict(api_name="/atlas_corpora")
    assert len(client.predict(key, "label=right", False, api_name="/atlas_search")) == 30
    with pytest.raises(Exception, match="metadata without vectors"):
        client.predict([handle_file(str(tmp_path / "metadata.tsv"))], api_name="/atlas_upload")
    with pytest.raises(Exception, match="nothing was uploaded"):
        client.predict([], api_name="/atlas_upload")
    # one file, as before
    assert client.predict(handle_file(str(tmp_path / "vectors.tsv")), api_name="/atlas_upload").startswith("upload:")
