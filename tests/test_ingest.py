"""python -m backends.ingest on a local Ray with 2 CPUs: a folder of Shapes images, a Parquet of text, Parquet
vectors and the h-space of a batch of generations become shards, a FAISS index and a map that the app's loader
opens; bad input is one line and exit code 2, before Ray is asked for anything."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N_IMAGES = 40
MAX_BYTES = 200 * 2**20


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """40 Shapes images as PNG files (plus one broken image and a text file), and their captions."""
    from PIL import Image

    from backends.shapes.scenes import make_batch

    d = tmp_path_factory.mktemp("shapes") / "images"
    (d / "more").mkdir(parents=True)
    b = make_batch(N_IMAGES, seed=3, size=64, single=True)
    names = []
    for i, im in enumerate(b.images):
        name = f"img-{i:03d}.png" if i < 30 else f"more/img-{i:03d}.png"
        Image.fromarray(im).save(d / name)
        names.append(name)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "README.txt").write_text("not an image")
    return d, b.images, list(b.captions), names


def _shards(out):
    t = pa.concat_tables([pq.read_table(f) for f in sorted((out / "shards").glob("part-*.parquet"))])
    return t, np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)


def _own_nearest(out, vectors):
    """Each row's nearest neighbour in index.faiss is itself (or an identical vector)."""
    from backends.ingest.index import search

    scores, ids = search(out / "index.faiss", vectors, k=1)
    ids = ids[:, 0]
    assert (ids >= 0).all()
    same = (ids == np.arange(len(vectors))) | np.all(np.isclose(vectors[ids], vectors, atol=1e-6), axis=1)
    assert same.all(), np.flatnonzero(~same)
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)  # cosine of a vector with itself


def test_images_folder_becomes_shards_index_and_a_corpus_the_app_opens(local_ray, shapes, tmp_path):
    from backends.corpora.loaders import load_path
    from backends.ingest import ingest
    from backends.representations.encoders import get_image_encoder

    folder, images, _, names = shapes
    out = tmp_path / "out"
    m = ingest(str(folder), str(out), workers=2, batch_size=8, shard_rows=16, index="ivf", nlist=2,
               map_method="pca", quiet=True)
    assert m["kind"] == "images" and m["encoder"] == "shapes-cnn" and m["rows"] == N_IMAGES
    assert [s["rows"] for s in m["shards"]] and sum(s["rows"] for s in m["shards"]) == N_IMAGES
    assert len(m["shards"]) >= 3 and all(s["rows"] <= 16 for s in m["shards"])
    assert any(s.startswith("broken.png") for s in m["skipped"]) and m["notes"]  # README.txt: not an image
    assert json.loads((out / "manifest.json").read_text())["rows"] == N_IMAGES
    assert m["items_per_second"] > 0 and m["items_per_second_encoder_stage"] > 0  # Ray Data's stats were read

    t, vectors = _shards(out)
    enc = get_image_encoder("shapes-cnn")
    ids = t.column("id").to_pylist()
    assert len(set(ids)) == N_IMAGES and vectors.shape == (N_IMAGES, enc.dim)
    assert pa.types.is_fixed_size_list(t.schema.field("vector").type)
    assert t.schema.field("vector").type.value_type == pa.float32()
    order = [names.index(f) for f in t.column("filename").to_pylist()]
    direct = enc.encode_images(images[order])  # the same encoder without Ray
    assert np.allclose(vectors, direct, atol=1e-5)
    thumb = t.column("thumbnail")[0].as_py()
    assert thumb.startswith(b"\x89PNG")

    _own_nearest(out, vectors)
    assert m["index"]["kind"] == "ivf" and m["index"]["parts"] == len(m["shards"])
    xy = pq.read_table(out / "map.parquet")
    assert xy.num_rows == N_IMAGES and xy.column("id").to_pylist() == ids

    assert not (out / "vectors.tsv").exists() and m["projector"] is None  # only with --projector
    corpus = load_path(out, max_bytes=MAX_BYTES)  # what `latent-atlas --data OUT/` does: the shards themselves
    assert len(corpus) == N_IMAGES and corpus.meta["id"].astype(str).tolist() == ids
    assert np.array_equal(corpus.vectors, vectors)
    assert {"filename", "width", "height"} <= set(corpus.meta.columns)
    assert corpus.images is not None and corpus.images.shape == (N_IMAGES, 64, 64, 3)
    assert np.array_equal(corpus.precomputed.xy, np.c_[xy.column("x").to_numpy(), xy.column("y").to_numpy()])


def test_text_parquet_embedded_with_minilm(local_ray, shapes, tmp_path):
    from backends.corpora.loaders import load_path, load_paths
    from backends.ingest import ingest
    from backends.plugins import get_text_encoder

    _, _, captions, _ = shapes
    texts = captions[:24]
    src = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"caption": texts, "n": list(range(len(texts))), "tags": [["a", "b"]] * len(texts)}), src)
    out = tmp_path / "out"
    m = ingest(str(src), str(out), workers=1, batch_size=16, make_map=False, quiet=True, projector=True)
    assert m["kind"] == "text" and m["encoder"] == "minilm" and m["map"] is None
    assert m["metadata_columns"] == ["caption", "n"] and "tags" in m["notes"][0]
    t, vectors = _shards(out)
    assert t.column("caption").to_pylist() == texts  # order kept
    assert len(set(t.column("id").to_pylist())) == len(texts)
    direct = get_text_encoder("minilm").encode_pooled(texts)
    assert vectors.shape == (len(texts), 384) and np.allclose(vectors, direct, atol=1e-5)
    _own_nearest(out, vectors)
    assert m["index"]["kind"] == "flat"
    corpus = load_path(out, max_bytes=MAX_BYTES)
    assert len(corpus) == len(texts) and corpus.texts == texts and corpus.precomputed.xy is None  # --no-map
    # --projector: the Embedding Projector pair too, which the app also reads as a pair
    assert m["projector"] == {"vectors": "vectors.tsv", "metadata": "metadata.tsv"}
    pair = load_paths([out / "vectors.tsv", out / "metadata.tsv"], max_bytes=MAX_BYTES)
    assert np.array_equal(pair.vectors, vectors) and pair.meta["caption"].tolist() == texts

    # its shards as a source: vectors, kept as they are (ids too), no encoder
    again = tmp_path / "again"
    m2 = ingest(str(out / "shards"), str(again), workers=2, make_map=False, quiet=True)
    assert m2["kind"] == "vectors" and m2["encoder"] is None and m2["rows"] == len(texts)
    t2, v2 = _shards(again)
    assert np.array_equal(v2, vectors) and t2.column("id").to_pylist() == t.column("id").to_pylist()


def test_hspace_of_a_batch_of_generations(local_ray, tmp_path):
    from backends.corpora.loaders import load_path
    from backends.generative.hspace_corpus import pooled, shapes_bank
    from backends.ingest import ingest
    from backends.plugins import get_generator

    pipe = get_generator().tiny(seed=0)
    out = tmp_path / "out"
    m = ingest("hspace:8", str(out), pipe=pipe, map_method="pca", quiet=True)
    assert m["kind"] == "hspace" and m["rows"] == 8 and "prompt" in m["metadata_columns"]
    t, vectors = _shards(out)
    bank = shapes_bank(pipe, 8)
    assert np.allclose(vectors, pooled(bank, bank.h.shape[1] // 2), atol=1e-6)
    assert t.column("thumbnail")[0].as_py().startswith(b"\x89PNG")
    assert len(load_path(out, max_bytes=MAX_BYTES)) == 8


def test_zip_of_images_is_read_by_the_worker_class(shapes, tmp_path):
    """A .zip: members listed on the driver (non-images and hidden files left out), read inside the worker;
    the worker class called directly, without Ray."""
    import zipfile

    from backends.ingest.embed import ImageEmbedder
    from backends.ingest.sources import open_source

    folder, images, _, names = shapes
    z = tmp_path / "images.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for name in names[:5]:
            zf.write(folder / name, name)
        zf.writestr("__MACOSX/._img-000.png", b"junk")
        zf.writestr("notes.txt", "hello")
        zf.writestr("bad.jpg", b"not a jpeg")
    src = open_source(str(z))
    assert src.kind == "images" and src.rows == 6 and "not images" in src.notes[0]
    assert [it["id"] for it in src.items[:2]] == ["img-000", "img-001"]
    out = ImageEmbedder("shapes-cnn")(pa.Table.from_pylist(src.items))
    errors = out.column("error").to_pylist()
    assert [bool(e) for e in errors] == [False] * 5 + [True] and "bad.jpg" == out.column("filename")[5].as_py()
    v = np.stack(out.column("vector").to_numpy(zero_copy_only=False)[:5])
    from backends.representations.encoders import get_image_encoder

    assert np.allclose(v, get_image_encoder("shapes-cnn").encode_images(images[:5]), atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing", "{tmp}/o"], "missing: no such file or folder"),
    (["{tmp}/empty", "{tmp}/o"], "the folder is empty"),
    (["{images}", "{tmp}/o", "--encoder", "nope"], "Unknown encoder spec 'nope'"),
    (["{images}", "{tmp}/o", "--encoder", "minilm"], "a text encoder; images need an image encoder"),
    (["{tmp}/vectors.parquet", "{tmp}/o", "--encoder", "minilm"], "holds vectors already"),
    (["{images}", "{tmp}/full"], "not empty"),
    (["{images}", "{tmp}/o", "--workers", "0"], "--workers must be a whole number"),
])
def test_bad_input_is_one_line_and_exit_code_2(shapes, tmp_path, capsys, args, message):
    from backends.ingest.__main__ import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("mine")
    pq.write_table(pa.table({"vector": [[1.0, 2.0], [3.0, 4.0]]}), tmp_path / "vectors.parquet")
    argv = [a.format(tmp=tmp_path, images=shapes[0]) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))  # nothing written


def test_command_line_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "backends.ingest", str(tmp_path / "nothing"), str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and "no such file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "backends.ingest", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, check=False)
    for flag in ("SOURCE", "OUT", "--encoder", "--ray-address", "--workers", "--batch-size", "--shard-rows",
                 "--map", "--no-map", "--projector"):
        assert flag in r.stdout, flag
