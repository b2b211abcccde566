"""Tables of numeric columns on different scales are standardised (issue #19 item 4).

scikit-learn's wine data (13 features from 0.1 to 1,680; shipped with scikit-learn, no download) as
an uploaded CSV: with the raw columns proline alone decides every distance; z-scored, the three
cultivars separate. Measured on the app's own tools (FAISS index, FAISS k-means, cosine as in the app):
1-NN label agreement 0.848 raw → 0.944 auto (euclidean 0.770 → 0.955), k-means (k=3) NMI 0.382 → 0.865.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backends.corpora import loaders as ds
from backends.errors import InputError

LIMIT = 5 * 1024 * 1024


def load(path, **kw):
    return ds.load_path(path, max_bytes=LIMIT, **kw)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    d = tmp_path_factory.mktemp("wine")
    df.to_csv(d / "wine.csv", index=False)
    return d / "wine.csv", df


def one_nn_agreement(vectors: np.ndarray, y: np.ndarray, metric: str) -> float:
    from backends.corpora.index import VectorIndex

    _, idx = VectorIndex(vectors, metric=metric).search(vectors, 2)
    nearest = np.where(idx[:, 0] == np.arange(len(y)), idx[:, 1], idx[:, 0])  # the nearest other item
    return float((y[nearest] == y).mean())


def kmeans_nmi(vectors: np.ndarray, y: np.ndarray, metric: str) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    from backends.clusters.clustering import ClusterParams, run_clustering

    return float(normalized_mutual_info_score(y, run_clustering(vectors, ClusterParams(k=3, metric=metric)).labels))


# -- scale_columns ------------------------------------------------------------------------


def test_z_score_and_robust_scaling_per_column():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(5, 0.1, 200), rng.normal(-3, 1000, 200), rng.exponential(2, 200)]).astype(np.float32)
    z, note = ds.scale_columns(x, "z-score")
    assert z.dtype == np.float32 and z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-4)
    assert note.startswith("numeric columns z-scored, as chosen") and "differed" in note
    r, note = ds.scale_columns(x, "robust")
    q25, med, q75 = np.percentile(r, [25, 50, 75], axis=0)
    np.testing.assert_allclose(med, 0, atol=1e-5)
    np.testing.assert_allclose(q75 - q25, 1, atol=1e-4)
    assert "robust-scaled" in note and "IQR" in note


def test_robust_guards_zero_iqr_and_constant_columns():
    x = np.zeros((20, 3), np.float32)
    x[:, 0] = np.arange(20)
    x[-1, 1] = 50.0  # IQR 0 (19 zeros) but not constant: divided by its std instead
    x[:, 2] = 7.0  # constant
    r, note = ds.scale_columns(x, "robust")
    assert np.isfinite(r).all()
    assert r[-1, 1] == pytest.approx((50.0 - 0.0) / x[:, 1].std(), rel=1e-5)
    assert (r[:, 2] == 0).all()
    assert "1 column(s) with zero IQR" in note and "1 constant column(s)" in note
    z, note = ds.scale_columns(x, "z-score")
    assert np.isfinite(z).all() and (z[:, 2] == 0).all() and "1 constant column(s) set to 0" in note


def test_auto_scales_only_when_column_scales_differ_more_than_10x():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(100, 2))
    x9 = (base * [1.0, 9.0] / base.std(axis=0)).astype(np.float32)  # std ratio 9: kept
    out, note = ds.scale_columns(x9, "auto")
    assert out is x9 and "kept as they are" in note and "9.0×" in note
    x11 = (base * [1.0, 11.0] / base.std(axis=0)).astype(np.float32)  # std ratio 11: z-scored
    out, note = ds.scale_columns(x11, "auto")
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)
    assert note == "numeric columns z-scored (column scales differed 11.0×); choose 'none' to keep raw values"
    out, note = ds.scale_columns(x11, "none")
    assert out is x11 and note == "numeric columns kept as they are, as chosen (column scales differed 11.0×)"


@pytest.mark.parametrize("value", ["minmax", "Z-scores", 3, ["auto"]])
def test_an_unknown_scaling_is_refused_by_name(tmp_path, value):
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 35.0]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="auto, z-score, robust, none"):
        load(tmp_path / "t.csv", scaling=value)


def test_scaling_names_are_forgiving():
    assert [ds.check_scaling(s) for s in (None, "", "AUTO", "zscore", " Z-Score ", "robust", "None")] == \
        ["auto", "auto", "auto", "z-score", "z-score", "robust", "none"]


# -- only a table's separate numeric columns are scaled ------------------------------------


def spread_out(n=30, seed=2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [0.01, 1.0, 1000.0]).astype(np.float32)  # scales 100,000× apart


def test_npy_embeddings_are_never_scaled(tmp_path):
    v = spread_out()
    np.save(tmp_path / "e.npy", v)
    for scaling in ("auto", "z-score", "robust"):
        c = load(tmp_path / "e.npy", scaling=scaling)
        np.testing.assert_array_equal(c.vectors, v)
        assert not any("numeric columns" in n for n in c.notes)


def test_vector_and_list_columns_are_never_scaled(tmp_path):
    v = spread_out()
    cells = ["[" + ", ".join(repr(float(x)) for x in r) + "]" for r in v]
    pd.DataFrame({"id": [f"r{i}" for i in range(len(v))], "vector": cells}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"feats": [list(map(float, r)) for r in v], "tag": ["x"] * len(v)}).to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        c = load(tmp_path / name, scaling="z-score")
        np.testing.assert_allclose(c.vectors, v, rtol=1e-6)
        assert not any("z-scored" in n for n in c.notes), c.notes


def test_projector_tsv_is_not_scaled(tmp_path):
    v = spread_out()
    (tmp_path / "vectors.tsv").write_text("\n".join("\t".join(f"{x:.6f}" for x in r) for r in v) + "\n")
    c = load(tmp_path / "vectors.tsv", scaling="z-score")
    np.testing.assert_allclose(c.vectors, v, atol=1e-5)


@pytest.mark.parametrize("name,write", [
    ("fast.csv", lambda df, p: df.drop(columns=["label"]).to_csv(p, index=False)),  # all numeric: np.loadtxt path
    ("labelled.csv", lambda df, p: df.to_csv(p, index=False)),  # a label column: the pandas path
    ("semicolons.csv", lambda df, p: df.to_csv(p, index=False, sep=";")),
    ("tabs.csv", lambda df, p: df.to_csv(p, index=False, sep="\t")),
    ("headerless.csv", lambda df, p: df.drop(columns=["label"]).to_csv(p, index=False, header=False)),
    ("table.parquet", lambda df, p: df.to_parquet(p)),
])
def test_every_numeric_column_path_is_scaled(wine, tmp_path, name, write):
    _, df = wine
    write(df, tmp_path / name)
    c = load(tmp_path / name)
    assert c.vectors.shape == (178, 13)
    np.testing.assert_allclose(c.vectors.std(axis=0), 1, atol=1e-4)
    assert c.notes[0].startswith("vectors from 13 numeric columns"), c.notes
    assert c.notes[1] == "numeric columns z-scored (column scales differed 2,530×); choose 'none' to keep raw values"
    raw = load(tmp_path / name, scaling="none")
    np.testing.assert_allclose(raw.vectors, df.drop(columns=["label"]).to_numpy(np.float32), rtol=1e-6)


def test_a_metadata_file_beside_a_numeric_csv_keeps_the_scaling(wine, tmp_path):
    _, df = wine
    df.drop(columns=["label"]).to_csv(tmp_path / "features.csv", index=False)
    df[["label"]].assign(id=[f"w{i}" for i in range(len(df))]).to_csv(tmp_path / "metadata.csv", index=False)
    c = ds.load_paths([tmp_path / "features.csv", tmp_path / "metadata.csv"], max_bytes=LIMIT)
    np.testing.assert_allclose(c.vectors.std(axis=0), 1, atol=1e-4)
    assert (c.meta["label"].to_numpy() == df["label"].to_numpy()).all()


# -- what it buys: wine --------------------------------------------------------------------


def test_wine_neighbours_and_clusters_follow_the_cultivars_once_scaled(wine):
    path, df = wine
    y = df["label"].to_numpy()
    raw, auto = load(path, scaling="none"), load(path)  # auto is the default
    assert (auto.meta["label"].to_numpy() == y).all() and auto.dim == 13
    assert ds.applied_scaling(auto.notes) == "z-scored" and ds.applied_scaling(raw.notes) is None
    measured = {}
    for metric in ("cosine", "euclidean"):
        measured[metric] = (one_nn_agreement(raw.vectors, y, metric), one_nn_agreement(auto.vectors, y, metric),
                            kmeans_nmi(raw.vectors, y, metric), kmeans_nmi(auto.vectors, y, metric))
    print("wine (raw → auto): 1-NN agreement / k-means NMI:", measured)
    for metric, (nn_raw, nn_auto, nmi_raw, nmi_auto) in measured.items():
        assert nn_auto > nn_raw + 0.05, (metric, nn_raw, nn_auto)  # measured: cosine .848 → .944, euclidean .770 → .955
        assert nn_auto >= 0.93, (metric, nn_auto)
        assert nmi_auto >= 0.8, (metric, nmi_auto)  # measured: cosine .865, euclidean .876 (raw .382 / .429)
        assert nmi_raw < 0.6, (metric, nmi_raw)
    robust = load(path, scaling="robust")
    assert one_nn_agreement(robust.vectors, y, "cosine") >= 0.93  # measured .938


def test_registry_labels_scaled_uploads_and_keeps_raw_and_scaled_apart(wine, tmp_path):
    from backends.registry import Backends
    from backends.settings import Settings

    path, _ = wine
    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))
    scaled, raw = b.add_path(str(path)), b.add_path(str(path), scaling="none")
    assert scaled != raw
    assert b.corpus_label(scaled) == "wine.csv (z-scored) · 178 × 13", b.corpus_label(scaled)
    assert "z-scored" not in b.corpus_label(raw)
    assert any("z-scored" in n for n in b.corpus(scaled).notes)
    restarted = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache")))  # kept on disk, label and notes too
    assert dict(restarted.corpus_choices())["wine.csv (z-scored) · 178 × 13"] == scaled
    np.testing.assert_array_equal(restarted.corpus(scaled).vectors, b.corpus(scaled).vectors)
    assert any("z-scored" in n for n in restarted.corpus(scaled).notes)


# -- through the app's API -----------------------------------------------------------------


def test_atlas_upload_takes_an_optional_scaling(atlas_app, wine):
    from gradio_client import Client, handle_file

    url, backends = atlas_app
    client = Client(url, verbose=False)
    path, _ = wine
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/atlas_upload"]
    assert [p["parameter_name"] for p in info["parameters"]] == ["file", "scaling"]
    auto = client.predict(handle_file(str(path)), api_name="/atlas_upload")  # the old call still works
    robust = client.predict(handle_file(str(path)), "robust", api_name="/atlas_upload")
    raw = client.predict(handle_file(str(path)), scaling="none", api_name="/atlas_upload")
    assert len({auto, robust, raw}) == 3
    assert backends.corpus(auto).notes[1].startswith("numeric columns z-scored (column scales differed 2,530×)")
    assert "robust-scaled" in backends.corpus(robust).notes[1]
    assert "kept as they are, as chosen" in backends.corpus(raw).notes[1]
    rows = client.predict(auto, "0", 10, "cosine", api_name="/atlas_neighbours")
    assert sum(r["label"] == 0 for r in rows) >= 9
    with pytest.raises(Exception, match="not one of auto, z-score, robust, none"):
        client.predict(handle_file(str(path)), "minmax", api_name="/atlas_upload")
    with pytest.raises(Exception, match="scaling"):
        client.predict(handle_file(str(path)), 3, api_name="/atlas_upload")
