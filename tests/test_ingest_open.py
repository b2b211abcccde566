"""An ingest's OUT folder opened as a corpus (backends/corpora/ingested.py): vectors, ids, metadata and
thumbnails from the shards, map.parquet as the Atlas's map (no UMAP run), index.faiss as the neighbour
index, and a message for each kind of broken folder. OUT is written with the ingest's own writer
functions (ShardWriter, the index task's `_add`), without Ray."""
from __future__ import annotations

import io
import json
import logging
import shutil

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
faiss = pytest.importorskip("faiss")

N, D, SHARD_ROWS = 60, 8, 25
MAX_BYTES = 1024  # the upload limit does not apply to an ingest's folder


def make_out(root, *, n: int = N, d: int = D, shard_rows: int = SHARD_ROWS, thumbs: bool = True, seed: int = 0):
    """OUT as the ingest writes it: shards (id, vector, label, n, thumbnail), an exact index.faiss, map.parquet
    (random coordinates, labelled as the ingest's default UMAP: no layout the app computes could equal them)
    and manifest.json. Returns (out, vectors, images, ids, xy)."""
    from backends.corpora.projection import ProjectionParams
    from backends.ingest.index import _add
    from backends.ingest.pipeline import FORMAT, MANIFEST
    from backends.ingest.write import ShardWriter, png_bytes, vector_array

    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    ids = [f"item-{i:03d}" for i in range(n)]
    out = root / "out"
    with ShardWriter(out, source="test", id_column="id", meta_columns=["label", "n"]) as w:
        for s in range(0, n, shard_rows):
            e = min(n, s + shard_rows)
            cols = {"id": ids[s:e], "vector": vector_array(vectors[s:e]),
                    "label": [f"c{i % 3}" for i in range(s, e)], "n": list(range(s, e))}
            if thumbs:
                cols["thumbnail"] = pa.array([png_bytes(im) for im in images[s:e]], pa.binary())
            w.add(pa.table(cols))
        written = w.finish()
    empty = faiss.serialize_index(faiss.IndexIDMap(faiss.IndexFlatIP(d)))
    faiss.write_index(faiss.deserialize_index(_add(empty, vectors, 0)), str(out / "index.faiss"))
    xy = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    pq.write_table(pa.table({"id": ids, "x": xy[:, 0], "y": xy[:, 1]}), out / "map.parquet")
    manifest = {"format": FORMAT, "source": "test", "kind": "images", "encoder": "shapes-cnn", "rows": n, "dim": d,
                "metadata_columns": written.meta_columns, "shards": written.shards,
                "index": {"file": "index.faiss", "kind": "flat", "rows": n, "dim": d},
                "map": {"file": "map.parquet", "method": "umap", "metric": "cosine", "rows": n,
                        "params": dict(ProjectionParams().__dict__)},
                "skipped": []}
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out, vectors, images, ids, xy


@pytest.fixture
def out(tmp_path):
    return make_out(tmp_path)


def _backends(tmp_path, **settings):
    from backends.registry import Backends
    from backends.settings import Settings

    return Backends(Settings.from_env(cache_dir=str(tmp_path / "cache"), **settings))


def _decoded_thumbnails(folder):
    from PIL import Image

    t = pa.concat_tables([pq.read_table(f, columns=["thumbnail"]) for f in sorted((folder / "shards").glob("*.parquet"))])
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in t.column("thumbnail").to_pylist()])


def test_load_path_reads_ids_vectors_metadata_and_thumbnails_from_the_shards(out):
    from backends.corpora.loaders import load_path
    from backends.ingest.write import read_vectors

    folder, vectors, images, ids, xy = out
    assert not (folder / "vectors.tsv").exists()  # nothing else to read
    c = load_path(folder, max_bytes=MAX_BYTES)
    assert c.name == "out" and len(c) == N and c.dim == D
    assert c.meta["id"].tolist() == ids and c.meta["label"].tolist()[:4] == ["c0", "c1", "c2", "c0"]
    assert c.meta["n"].tolist() == list(range(N))
    assert c.vectors.dtype == np.float32 and c.vectors.flags.c_contiguous
    assert np.array_equal(c.vectors, read_vectors(folder)) and np.array_equal(c.vectors, vectors)
    assert c.images is not None and np.array_equal(c.images, _decoded_thumbnails(folder))
    assert np.array_equal(c.images, images)
    assert np.array_equal(c.precomputed.xy, xy) and c.precomputed.map_params["method"] == "umap"
    assert c.precomputed.index_path == str(folder / "index.faiss")
    assert any("map from map.parquet" in n for n in c.notes) and any("index.faiss" in n for n in c.notes)


def test_a_vectors_ingest_has_no_thumbnails_and_a_text_column_is_its_hover_text(tmp_path):
    from backends.corpora.loaders import load_path

    folder, vectors, *_ = make_out(tmp_path, thumbs=False)
    m = json.loads((folder / "manifest.json").read_text())
    for s in m["shards"]:  # a text source's caption column, as the ingest writes it
        t = pq.read_table(folder / s["file"])
        pq.write_table(t.append_column("caption", pa.array([f"text {i}" for i in t.column("n").to_pylist()])),
                       folder / s["file"])
    m["metadata_columns"] = ["label", "n", "caption"]
    (folder / "manifest.json").write_text(json.dumps(m))
    c = load_path(folder, max_bytes=MAX_BYTES)
    assert c.images is None and c.texts == [f"text {i}" for i in range(N)] and np.array_equal(c.vectors, vectors)


def test_the_atlas_default_map_is_map_parquet_and_no_umap_runs(out, tmp_path, monkeypatch):
    from app.services.atlas import AtlasService
    from backends.corpora import projection

    folder, _, _, ids, xy = out

    def no_umap(*args, **kwargs):
        raise AssertionError("UMAP ran for a corpus whose map the ingest computed")

    monkeypatch.setattr(projection, "umap_from_knn", no_umap)
    b = _backends(tmp_path)
    key = b.add_path(str(folder))  # what `latent-atlas --data OUT/` does
    svc = AtlasService(b)
    view = svc.project(key, "umap", 15, 0.1, "cosine")  # the Atlas's defaults
    coords = svc.coordinates(view)
    assert coords["ids"] == ids
    assert np.array_equal(np.c_[coords["x"], coords["y"]].astype(np.float32), xy)
    pca = svc.coordinates(svc.project(key, "pca", 15, 0.1, "cosine"))  # other maps are still computed
    assert not np.allclose(pca["x"], coords["x"])
    with pytest.raises(AssertionError, match="UMAP ran"):  # and other UMAP params run UMAP
        svc.project(key, "umap", 5, 0.1, "cosine")
    thumbs = b.thumbnail_dir(key)  # the Atlas's hover and selection images
    assert thumbs is not None and svc.thumb_url(key)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(thumbs / "7.png")), out[2][7])


def test_neighbours_come_from_index_faiss_and_match_an_exact_search(out, tmp_path, monkeypatch):
    from backends.corpora import index as index_module
    from backends.corpora.index import brute_force_knn

    folder, vectors, *_ = out
    b = _backends(tmp_path)
    key = b.add_path(str(folder))
    built = []
    real_init = index_module.VectorIndex.__init__
    monkeypatch.setattr(index_module.VectorIndex, "__init__",
                        lambda self, *a, **k: (built.append(k.get("metric")), real_init(self, *a, **k))[1])
    index = b.index(key, "cosine")
    assert index.file == str(folder / "index.faiss") and index.n == N and not built
    _, truth = brute_force_knn(vectors, vectors, 6, "cosine")
    for item in (0, 17, 59):
        d, i = b.neighbours(key, item, k=5)
        assert i.tolist() == [j for j in truth[item] if j != item][:5]
        assert np.all(np.diff(d) >= -1e-6) and np.all(d >= -1e-6)
    b.index(key, "euclidean")  # no euclidean index in OUT: built here
    assert built == ["euclidean"]


def test_an_index_that_does_not_hold_the_corpus_is_built_again_with_a_log_line(out, tmp_path, caplog):
    folder, vectors, *_ = out
    small = faiss.IndexIDMap(faiss.IndexFlatIP(D))
    small.add_with_ids(vectors[:10], np.arange(10, dtype=np.int64))
    faiss.write_index(small, str(folder / "index.faiss"))
    b = _backends(tmp_path)
    key = b.add_path(str(folder))
    with caplog.at_level(logging.WARNING, logger="latent_atlas"):
        index = b.index(key, "cosine")
    assert index.file is None and index.n == N
    assert "holds 10 vectors of 8 dims, but the corpus has 60 of 8" in caplog.text
    assert "building an index instead" in caplog.text


def _drop_shard(folder):
    (folder / "shards" / "part-00001.parquet").unlink()


def _manifest(**change):
    def edit(folder):
        m = json.loads((folder / "manifest.json").read_text())
        for k, v in change.items():
            if k == "shard_rows":
                m["shards"][1]["rows"] = v
            else:
                m[k] = v
        (folder / "manifest.json").write_text(json.dumps(m))
    return edit


def _rewrite_shard(column, values):
    def edit(folder):
        f = folder / "shards" / "part-00001.parquet"
        t = pq.read_table(f)
        i = t.column_names.index(column)
        pq.write_table(t.set_column(i, column, values(t)), f)
    return edit


def _wide_vectors(t):
    from backends.ingest.write import vector_array

    return vector_array(np.ones((t.num_rows, D + 1), np.float32))


def _broken_thumbnail(t):
    cells = t.column("thumbnail").to_pylist()
    cells[3] = b"\x89PNG\r\n\x1a\n not really"
    return pa.array(cells, pa.binary())


@pytest.mark.parametrize("edit, message", [
    (_drop_shard, r"out/shards/part-00001.parquet: missing \(manifest.json lists 3 shard\(s\)"),
    (_manifest(shard_rows=26, rows=N + 1), r"out/shards/part-00001.parquet: has 25 rows, but manifest.json says 26"),
    (_manifest(shard_rows=26), r"out/manifest.json: its shards add up to 61 rows, but 'rows' says 60"),
    (_manifest(dim=D + 1), r"part-00000.parquet: vectors have 8 dims, but manifest.json says 9"),
    (_rewrite_shard("vector", _wide_vectors), r"part-00001.parquet: vectors have 9 dims, but manifest.json says 8"),
    (_rewrite_shard("thumbnail", _broken_thumbnail),
     r"part-00001.parquet: the thumbnail of row 3 \(id 'item-028'\) does not decode"),
    (_manifest(format="something-else"), r"out/manifest.json: not an ingest's manifest"),
    (lambda f: (f / "manifest.json").write_text("{not json"), r"out/manifest.json: not readable JSON"),
])
def test_a_broken_folder_gets_a_message_naming_what_is_wrong(out, edit, message):
    from backends.corpora.loaders import load_path
    from backends.errors import InputError

    edit(out[0])
    with pytest.raises(InputError, match=message):
        load_path(out[0], max_bytes=MAX_BYTES)


def test_a_folder_over_the_memory_budget_is_refused_before_it_is_read(out):
    from backends.corpora.limits import UploadLimits
    from backends.corpora.loaders import load_path
    from backends.errors import InputError

    with pytest.raises(InputError, match=r"out: 60 rows × 8 dims would take about .* \(vectors 1.9 KB, .*thumbnails "
                                         r"720.0 KB\) .* over this server's budget of 100.0 KB; raise it with "
                                         r"LATENT_ATLAS_MEMORY_BUDGET_GB"):
        load_path(out[0], max_bytes=MAX_BYTES, limits=UploadLimits(memory_budget=100 * 1024))


def test_a_map_that_does_not_match_the_shards_is_left_out_with_a_note(out):
    from backends.corpora.loaders import load_path

    folder, *_ = out
    pq.write_table(pa.table({"id": ["x"] * 3, "x": [0.0] * 3, "y": [0.0] * 3}), folder / "map.parquet")
    c = load_path(folder, max_bytes=MAX_BYTES)
    assert c.precomputed.xy is None and any("map.parquet not used" in n for n in c.notes)


def test_the_running_app_opens_the_folder_as_a_corpus(atlas_app, tmp_path):
    from gradio_client import Client

    url, backends = atlas_app
    folder, vectors, _, ids, xy = make_out(tmp_path, seed=1)
    shutil.move(folder, tmp_path / "ingested")
    key = backends.add_path(str(tmp_path / "ingested"))  # app/cli.py's --data (the fixture's upload limit is 1 MB)
    client = Client(url, verbose=False)
    assert key in client.predict(api_name="/atlas_corpora")
    got = client.predict(key, "umap", 15, 0.1, "cosine", api_name="/atlas_project")
    assert got["ids"] == ids and np.array_equal(np.c_[got["x"], got["y"]].astype(np.float32), xy)
    near = client.predict(key, ids[5], 3, "cosine", api_name="/atlas_neighbours")
    assert len(near) == 3 and ids[5] not in [r["id"] for r in near]
    assert backends.index(key).file == str(tmp_path / "ingested" / "index.faiss")
    assert backends.corpus(key).images is not None


def test_after_a_restart_the_stored_folder_keeps_its_map_and_index(out, tmp_path, monkeypatch):
    """The upload store keeps OUT's map and a copy of index.faiss with the corpus: after a restart (and
    with OUT gone) neighbours still come from that index, not from one built again."""
    from backends.corpora import index as index_module

    folder, vectors, _, _, xy = out
    key = _backends(tmp_path).add_path(str(folder))
    shutil.rmtree(folder)
    b = _backends(tmp_path)  # the next run of the server, on the same cache dir
    assert key in b.uploads.keys()
    c = b.corpus(key)
    assert np.array_equal(c.precomputed.xy, xy) and c.precomputed.map_params
    built = []
    real_init = index_module.VectorIndex.__init__
    monkeypatch.setattr(index_module.VectorIndex, "__init__",
                        lambda self, *a, **k: (built.append(1), real_init(self, *a, **k))[1])
    index = b.index(key, "cosine")
    assert not built and index.file and index.file.startswith(str(b.uploads.root)) and index.n == N
    d, i = b.neighbours(key, 17, k=5)
    sims = vectors @ vectors[17] / np.linalg.norm(vectors, axis=1) / np.linalg.norm(vectors[17])
    assert i.tolist() == [j for j in np.argsort(-sims) if j != 17][:5]


def test_an_ivf_index_file_is_probed_until_recall_at_10_reaches_the_target(tmp_path):
    """An ingest's IndexIVFFlat is exact within the lists it probes: read with the corpus's vectors, its
    stored nprobe (1 here) is raised until recall@10 on sample rows is ≥ 0.95."""
    from backends.corpora.index import VectorIndex, brute_force_knn, normalize_rows

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(40, 16))[rng.integers(0, 40, 4000)] + 0.6 * rng.normal(size=(4000, 16))).astype(np.float32)
    quantizer = faiss.IndexFlatIP(16)
    ivf = faiss.IndexIVFFlat(quantizer, 16, 64, faiss.METRIC_INNER_PRODUCT)
    ivf.train(normalize_rows(x))
    ivf.add(normalize_rows(x))
    ivf.nprobe = 1
    faiss.write_index(ivf, str(tmp_path / "index.faiss"))
    stored = VectorIndex.read(tmp_path / "index.faiss", rows=4000, dim=16)
    assert stored.kind == "ivf" and stored.nprobe == 1 and stored.recall_estimate is None
    tuned = VectorIndex.read(tmp_path / "index.faiss", rows=4000, dim=16, vectors=x)
    assert tuned.nprobe > 1 and tuned.recall_estimate >= 0.95
    _, truth = brute_force_knn(x, x[:300], 11, "cosine")
    hits = [len(set(g[1:]) & set(t[1:])) / 10 for g, t in zip(tuned.search(x[:300], 11)[1], truth)]
    assert np.mean(hits) >= 0.9  # on other rows too (the sample was 256 random rows)
    with pytest.raises(Exception, match="vectors given"):
        VectorIndex.read(tmp_path / "index.faiss", rows=4000, dim=16, vectors=x[:10])


def test_the_memory_estimate_counts_the_folders_own_index_and_no_umap_fit(out):
    from backends.corpora.loaders import load_path
    from backends.corpora.memory import estimate_corpus, estimate_serving_bytes

    folder, *_ = out
    c = load_path(folder, max_bytes=MAX_BYTES)
    est = estimate_corpus(c)
    plain = estimate_serving_bytes(N, D)
    assert est.index == (folder / "index.faiss").stat().st_size and est.index_kind == "flat"
    assert est.projection == 0 < plain.projection
