"""Large corpora on the server (issue #21 item 2): a memory estimate instead of a fixed row cap, an
index that fits the size (IVF above a threshold, recall@10 ≥ 0.95 against brute force), and
Parquet / .npy uploads read without whole-table copies, giving the same vectors as before.

Peak memory itself is measured in bench/bench_parquet_memory.py (a subprocess per load)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backends.corpora import loaders as ds
from backends.corpora import memory
from backends.corpora.index import VectorIndex, brute_force_knn, index_bytes, index_kind_for, ivf_layout
from backends.errors import InputError
from backends.registry import Backends
from backends.settings import Settings
from test_index import clustered

LIMIT = 64 * 1024 * 1024


def recall_at_10(got, truth) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth)]))


# -- the memory estimate decides, not a row count ----------------------------------------


def backends_with_budget(tmp_path, gb: float) -> Backends:
    return Backends(Settings.from_env(cache_dir=str(tmp_path / "cache"), memory_budget_gb=gb))


def test_a_corpus_over_the_memory_budget_is_refused_by_name_size_estimate_and_budget(tmp_path):
    x = np.random.default_rng(0).normal(size=(5_000, 64)).astype(np.float32)
    np.save(tmp_path / "big.npy", x)
    b = backends_with_budget(tmp_path, 0.001)  # about 1 MB
    with pytest.raises(InputError) as err:
        b.add_path(str(tmp_path / "big.npy"))
    msg = str(err.value)
    assert msg.startswith("big.npy: 5,000 rows × 64 dims would take about ")
    assert "vectors 1.2 MB" in msg and "exact index 1.2 MB" in msg
    assert "over this server's budget of 1.0 MB" in msg and "LATENT_ATLAS_MEMORY_BUDGET_GB=" in msg
    assert b.user_corpus_keys() == []  # nothing kept

    ok = backends_with_budget(tmp_path, 1.0)
    key = ok.add_path(str(tmp_path / "big.npy"))
    assert len(ok.corpus(key)) == 5_000


def test_more_rows_than_the_old_300k_cap_load_when_they_fit(tmp_path):
    assert not hasattr(Settings(), "max_points")
    x = np.random.default_rng(1).normal(size=(300_001, 3)).astype(np.float32)
    np.save(tmp_path / "wide.npy", x)
    b = backends_with_budget(tmp_path, 2.0)
    key = b.add_path(str(tmp_path / "wide.npy"))
    assert len(b.corpus(key)) == 300_001


def test_the_operators_data_file_is_limited_by_the_memory_budget_not_the_upload_limits(tmp_path):
    """`--data big.npy`: the person running the server named it, so the upload limits (200 MB, a cell
    count) do not refuse it; the memory budget still does. An upload of the same file is refused."""
    x = np.random.default_rng(2).normal(size=(4_000, 32)).astype(np.float32)  # 128,000 values, 512 kB
    np.save(tmp_path / "data.npy", x)
    settings = Settings.from_env(cache_dir=str(tmp_path / "cache"), max_upload_cells=100_000, max_upload_mb=1,
                                 memory_budget_gb=1.0)
    b = Backends(settings)
    with pytest.raises(InputError, match="over the limit of 100,000 values"):
        b.add_path(str(tmp_path / "data.npy"))
    key = b.add_path(str(tmp_path / "data.npy"), operator=True)
    assert np.array_equal(b.corpus(key).vectors, x)
    tight = Backends(Settings.from_env(cache_dir=str(tmp_path / "cache2"), memory_budget_gb=0.0001))
    with pytest.raises(InputError, match="over this server's budget"):
        tight.add_path(str(tmp_path / "data.npy"), operator=True)


def test_the_budget_comes_from_the_environment_or_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_ATLAS_MEMORY_BUDGET_GB", "2.5")
    assert Settings.from_env(cache_dir=str(tmp_path)).memory_budget_bytes == int(2.5 * 1024**3)
    monkeypatch.setenv("LATENT_ATLAS_MEMORY_BUDGET_GB", "lots")
    with pytest.raises(ValueError, match="LATENT_ATLAS_MEMORY_BUDGET_GB must be a number"):
        Settings.from_env(cache_dir=str(tmp_path))
    monkeypatch.delenv("LATENT_ATLAS_MEMORY_BUDGET_GB")
    monkeypatch.setattr(memory, "total_memory_bytes", lambda: 10 * 1024**3)
    assert Settings.from_env(cache_dir=str(tmp_path)).memory_budget_bytes == 6 * 1024**3  # 60%
    assert memory.total_memory_bytes is not None


def test_the_estimate_follows_the_index_the_corpus_gets():
    assert index_kind_for(19_999) == "flat" and index_kind_for(20_000) == "hnsw"
    assert index_kind_for(999_999) == "hnsw" and index_kind_for(1_000_000) == "ivf"
    big = memory.estimate_serving_bytes(1_000_000, 384)
    assert big.index_kind == "ivf" and big.vectors == 1_000_000 * 384 * 4
    assert big.index < 0.2 * big.vectors  # 192 one-byte codes, an id and a norm a row
    mid = memory.estimate_serving_bytes(999_999, 384)
    assert mid.index_kind == "hnsw" and mid.index > big.vectors  # the rows again, and the graph
    assert index_bytes(10, 8, "flat") == 320 and ivf_layout(1_000_000, 384) == (4000, 192)
    assert ivf_layout(200_000, 32)[1] == 0  # below 64 dimensions: the scalar quantizer
    assert "HNSW index" in mid.describe() and mid.describe().startswith(memory.fmt_bytes(mid.total))


# -- an IVF index above the threshold ------------------------------------------------------


def test_ivf_recall_at_10_against_brute_force_cosine():
    x = clustered(200_000, 32)
    q = clustered(300, 32, seed=1)
    index = VectorIndex(x, metric="cosine", ivf_above=100_000)  # "auto": IVF above the (lowered) threshold
    assert index.kind == "ivf" and index.codec == "SQ8" and index.nprobe >= 1  # below 64 dims
    d, got = index.search(q, 10)
    bd, truth = VectorIndex(x, metric="cosine", kind="flat").search(q, 10)  # brute force, by FAISS
    recall = recall_at_10(got, truth)
    print(f"IVF-SQ8 200k x 32 recall@10 {recall:.4f} at nprobe {index.nprobe} (build estimate {index.recall_estimate:.4f})")
    assert recall >= 0.95, recall
    assert (np.diff(d, axis=1) >= -1e-6).all()  # nearest first
    hit = got[:, 0] == truth[:, 0]
    np.testing.assert_allclose(d[hit, 0], bd[hit, 0], atol=1e-4)  # exact distances (re-ranked)


def test_ivf_pq_recall_at_10_euclidean():
    """Product quantisation (64 dimensions and more); its training costs ~0.1–0.4 s a sub-quantizer
    whatever the rows, so this one is smaller (bench/bench_knn.py --kind ivf: 200,000 rows)."""
    x = clustered(50_000, 64, seed=2)
    q = clustered(300, 64, seed=3)
    index = VectorIndex(x, metric="euclidean", kind="ivf")
    assert index.codec == "PQ32"
    _, got = index.search(q, 10)
    _, truth = brute_force_knn(x, q, 10, "euclidean")
    recall = recall_at_10(got, truth)
    print(f"IVF-PQ32 50k x 64 recall@10 {recall:.4f} at nprobe {index.nprobe}")
    assert recall >= 0.95, recall


def test_ivf_small_corpus_knn_graph_and_registry_threshold(tmp_path):
    x = clustered(3_000, 64, seed=4)
    index = VectorIndex(x, metric="cosine", kind="ivf", ivf_nprobe=4, pq_m=8)
    assert index.nprobe == 4 and index.recall_estimate is None and index.codec == "PQ8"
    idx, dist = index.knn_graph(x[:50], 5)
    assert (idx[:, 0] == np.arange(50)).all() and (dist >= 0).all()
    with pytest.raises(InputError, match="pq_m must divide the 64 dimensions"):
        VectorIndex(x, kind="ivf", pq_m=7)

    from backends.corpora.corpus import Corpus

    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "c"), ivf_index_above=1_000, exact_index_below=100))
    key = b.add_corpus(Corpus("small", clustered(2_000, 32, seed=5), pd.DataFrame(index=range(2_000))))
    assert b.index(key).kind == "ivf"  # the registry passes its threshold on
    d, i = b.neighbours(key, 0, k=5)
    assert len(i) == 5 and 0 not in i


# -- Parquet read column-wise: the same vectors as the general path -----------------------


def general(path):
    """The general path (pandas for the whole table), which every parquet upload took before."""
    return ds._parts_from_table(pq.read_table(path).to_pandas(), path.name, [], csv=False)


def assert_same_as_general(path, expected=None):
    c = ds.load_path(path, max_bytes=LIMIT)
    ref = general(path)
    if ref.from_columns:  # as load_path does
        ref.scale("auto")
    assert c.vectors.dtype == np.float32 and c.vectors.flags.c_contiguous
    np.testing.assert_array_equal(c.vectors, ref.vectors)
    if expected is not None:
        np.testing.assert_array_equal(c.vectors, expected)
    meta_ref = ds._finish_meta(ref.meta, list(ref.notes))
    pd.testing.assert_frame_equal(c.meta.drop(columns=["id"]) if "id" not in meta_ref.columns else c.meta,
                                  meta_ref, check_dtype=True)
    assert c.notes == ref.notes
    assert c.texts == ref.texts
    return c


@pytest.mark.parametrize("layout", ["list32", "list64", "fixed32", "large_list32", "list_int"])
def test_parquet_list_column_gives_the_same_vectors(tmp_path, layout):
    rng = np.random.default_rng(5)
    n, d = 1_000, 24
    x = rng.normal(size=(n, d)).astype(np.float32)
    if layout == "list_int":
        raw = rng.integers(-1000, 1000, size=(n, d))
        values, expected = pa.array(raw.reshape(-1)), raw.astype(np.float64).astype(np.float32)
    elif layout == "list64":
        raw = rng.normal(size=(n, d))
        values, expected = pa.array(raw.reshape(-1)), raw.astype(np.float32)
    else:
        values, expected = pa.array(x.reshape(-1)), x
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int64 if layout.startswith("large") else np.int32))
    col = {"fixed32": lambda: pa.FixedSizeListArray.from_arrays(values, d),
           "large_list32": lambda: pa.LargeListArray.from_arrays(offsets, values)}.get(
        layout, lambda: pa.ListArray.from_arrays(offsets, values))()
    table = pa.table({"name": [f"r{i}" for i in range(n)], "embedding": col, "label": np.arange(n) % 7,
                      "caption": [f"text {i}" for i in range(n)]})
    p = tmp_path / "t.parquet"
    pq.write_table(table, p, row_group_size=300)  # several row groups: read in batches across them
    c = assert_same_as_general(p, expected)
    assert c.notes[0] == "vectors from column 'embedding' (24 dims)"
    assert list(c.meta.columns) == ["id", "name", "label", "caption"] and c.texts[3] == "text 3"


def test_parquet_numeric_columns_give_the_same_vectors(tmp_path):
    rng = np.random.default_rng(6)
    n = 2_000
    df = pd.DataFrame({"id": [f"item{i}" for i in range(n)]})
    for j in range(40):
        df[f"f{j}"] = rng.normal(size=n).astype(np.float32 if j % 3 else np.float64) * (1 + j)
    df["count"] = rng.integers(0, 100, size=n)  # an integer column is a dimension too
    df["label"] = rng.integers(0, 3, size=n)  # a label column is metadata
    df["tag"] = [f"t{i % 5}" for i in range(n)]
    p = tmp_path / "cols.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), p, row_group_size=700)
    c = assert_same_as_general(p)  # "auto": z-scored, the column scales differ 40×
    assert c.vectors.shape == (n, 41) and "numeric columns z-scored" in c.notes[1]
    assert c.notes[0] == "vectors from 41 numeric columns ('f0' … 'count')"
    assert list(c.meta.columns) == ["id", "label", "tag"]
    raw = ds.load_path(p, max_bytes=LIMIT, scaling="none")
    cols = [f"f{j}" for j in range(40)] + ["count"]
    np.testing.assert_array_equal(raw.vectors, df[cols].to_numpy(np.float64).astype(np.float32))
    for scaling in ("z-score", "robust"):
        got = ds.load_path(p, max_bytes=LIMIT, scaling=scaling)
        ref = general(p)
        ref.scale(scaling)
        np.testing.assert_array_equal(got.vectors, ref.vectors)


def test_parquet_unusual_layouts_take_the_general_path(tmp_path):
    v = np.random.default_rng(7).normal(size=(6, 3)).astype(np.float32)
    # a pandas index stored as a column, and two list columns (the first is used, with a note)
    df = pd.DataFrame({"feats": list(v), "other": list(v * 2), "tag": list("abcdef")}, index=list("uvwxyz"))
    df.to_parquet(tmp_path / "two.parquet")
    c = assert_same_as_general(tmp_path / "two.parquet", v)
    assert c.notes[1].startswith("several list columns ('feats', 'other'); used the first")
    # a null row in the vector column: the general path's message
    pd.DataFrame({"vector": [[1.0, 2.0], None, [0.0, 1.0]]}).to_parquet(tmp_path / "null.parquet")
    with pytest.raises(InputError, match=r"column 'vector', row 1 is empty"):
        ds.load_path(tmp_path / "null.parquet", max_bytes=LIMIT)
    # NaN inside the lists, and null numbers among numeric columns: rows named
    pd.DataFrame({"vector": [[1.0, np.nan], [2.0, 1.0], [0.0, 1.0]]}).to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(InputError, match=r"1 row\(s\) contain NaN or Inf \(rows 0\)"):
        ds.load_path(tmp_path / "nan.parquet", max_bytes=LIMIT)
    pd.DataFrame({"a": [1.0, None, 3.0], "b": pd.array([1, 2, None], dtype="Int64")}).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(InputError, match=r"2 row\(s\) contain NaN or Inf \(rows 1, 2\)"):
        ds.load_path(tmp_path / "n.parquet", max_bytes=LIMIT)


# -- .npy: read from the file; the stored copy memory-mapped --------------------------------


def test_npy_upload_and_its_stored_copy(tmp_path):
    x = np.random.default_rng(8).normal(size=(400, 16)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    b = backends_with_budget(tmp_path, 1.0)
    key = b.add_path(str(tmp_path / "v.npy"))
    np.testing.assert_array_equal(b.corpus(key).vectors, x)
    fp = b.corpus(key).fingerprint
    again = backends_with_budget(tmp_path, 1.0)  # a restart: the upload is read from the store
    c = again.corpus(key)
    assert isinstance(c.vectors.base, np.memmap) or isinstance(c.vectors, np.memmap)
    np.testing.assert_array_equal(c.vectors, x)
    assert c.fingerprint == fp
    d, i = again.neighbours(key, 3, k=4)  # a read-only array serves as any other
    assert len(i) == 4 and 3 not in i
