"""Corpus loaders: the bundled digits, every upload format, and every bad input from issue 2."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from backends.corpora import loaders as ds
from backends.corpora.corpus import available_corpora, load_corpus
from backends.errors import InputError
from conftest import write_pickled_npy

MB = 1024 * 1024
LIMIT = 5 * MB


def load(path, **kw):
    return ds.load_path(path, max_bytes=kw.pop("max_bytes", LIMIT), **kw)


def vectors(n=12, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def png_bytes(color, size=(20, 10), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# -- digits ------------------------------------------------------------------------------


def test_digits_corpus():
    assert "digits" in available_corpora()
    c = load_corpus("digits")
    assert len(c) == 1797 and c.dim == 64
    assert c.images.shape == (1797, 32, 32, 3) and c.images.dtype == np.uint8
    assert c.images.max() == 255 and c.images.min() == 0
    assert c.meta["id"].iloc[0] == "digit-0000" and c.meta["id"].iloc[-1] == "digit-1796"
    assert set(c.meta["label"]) == set(range(10))
    assert c.texts is None
    # nearest-neighbour upscale: each 8×8 pixel became a 4×4 block, same value in R, G, B
    im = c.images[0]
    assert (im[:4, :4] == im[0, 0]).all() and (im[..., 0] == im[..., 2]).all()


# -- valid files of every format --------------------------------------------------------


def test_npy(tmp_path):
    np.save(tmp_path / "emb.npy", vectors(10, 7))
    c = load(tmp_path / "emb.npy")
    assert c.vectors.shape == (10, 7) and c.vectors.dtype == np.float32
    assert c.name == "emb" and list(c.meta["id"]) == [str(i) for i in range(10)]


def test_npz_first_numeric_2d_array_and_1d_metadata(tmp_path):
    np.savez(tmp_path / "a.npz", names=np.array(["x"] * 3), labels=np.arange(9) % 3, emb=vectors(9, 4))
    c = load(tmp_path / "a.npz")
    assert c.vectors.shape == (9, 4)
    assert list(c.meta["labels"]) == [0, 1, 2] * 3
    assert any("'emb'" in n for n in c.notes)


def test_parquet_vector_column_and_metadata(tmp_path):
    v = vectors(6, 4)
    df = pd.DataFrame({"id": [f"item{i}" for i in range(6)], "embedding": list(v), "text": list("abcdef"),
                       "score": np.arange(6.0)})
    df.to_parquet(tmp_path / "t.parquet")
    c = load(tmp_path / "t.parquet")
    np.testing.assert_allclose(c.vectors, v)
    assert list(c.meta.columns) == ["id", "text", "score"]
    assert c.meta["id"].iloc[2] == "item2"
    assert c.texts == list("abcdef")
    assert any("'embedding'" in n for n in c.notes)


def test_parquet_only_list_column_is_auto_detected(tmp_path):
    v = vectors(5, 3)
    pd.DataFrame({"feats": [list(map(float, r)) for r in v], "tag": list("vwxyz")}).to_parquet(tmp_path / "t.parquet")
    c = load(tmp_path / "t.parquet")
    np.testing.assert_allclose(c.vectors, v, rtol=1e-6)
    assert "tag" in c.meta.columns


def test_csv_numeric_columns_become_dimensions(tmp_path):
    v = vectors(8, 3)
    df = pd.DataFrame(v, columns=["a", "b", "c"])
    df.insert(0, "label", [0, 1] * 4)
    df["name"] = [f"n{i}" for i in range(8)]
    df.to_csv(tmp_path / "t.csv", index=False)
    c = load(tmp_path / "t.csv")
    assert c.vectors.shape == (8, 3)  # "label" stays metadata
    assert list(c.meta["label"]) == [0, 1] * 4 and "name" in c.meta.columns
    assert any("3 numeric columns" in n for n in c.notes)


@pytest.mark.parametrize("fmt", ["[{}]", "{}"])
def test_csv_string_vector_column(tmp_path, fmt):
    v = vectors(4, 3).astype(np.float64)
    sep = ", " if fmt.startswith("[") else " "
    cells = [fmt.format(sep.join(repr(float(x)) for x in row)) for row in v]
    pd.DataFrame({"id": list("abcd"), "vector": cells}).to_csv(tmp_path / "t.csv", index=False)
    c = load(tmp_path / "t.csv")
    np.testing.assert_allclose(c.vectors, v, rtol=1e-6)
    assert list(c.meta["id"]) == list("abcd")


def test_csv_without_header(tmp_path):
    np.savetxt(tmp_path / "t.csv", vectors(5, 3), delimiter=",")
    assert load(tmp_path / "t.csv").vectors.shape == (5, 3)


def test_duplicate_id_column_is_kept_but_not_used(tmp_path):
    df = pd.DataFrame({"id": ["a", "a", "b"], "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 3.0]})
    df.to_csv(tmp_path / "t.csv", index=False)
    c = load(tmp_path / "t.csv")
    assert list(c.meta["source_id"]) == ["a", "a", "b"] and c.meta["id"].is_unique
    assert any("more than once" in n for n in c.notes)


def write_projector(tmp_path, v, meta_lines=None):
    (tmp_path / "vectors.tsv").write_text("\n".join("\t".join(f"{x:.6f}" for x in r) for r in v) + "\n")
    if meta_lines is not None:
        (tmp_path / "metadata.tsv").write_text("\n".join(meta_lines) + "\n")
    return tmp_path / "vectors.tsv", tmp_path / "metadata.tsv"


def test_projector_tsv_with_multicolumn_metadata(tmp_path):
    v = vectors(4, 3)
    vp, mp = write_projector(tmp_path, v, ["word\tcount", "cat\t1", "dog\t2", "cow\t3", "pig\t4"])
    c = ds.load_paths([str(vp), str(mp)], max_bytes=LIMIT)
    np.testing.assert_allclose(c.vectors, v, atol=1e-5)
    assert list(c.meta["word"]) == ["cat", "dog", "cow", "pig"] and list(c.meta["count"]) == [1, 2, 3, 4]


def test_projector_tsv_single_column_metadata_has_no_header(tmp_path):
    vp, mp = write_projector(tmp_path, vectors(3, 2), ["cat", "dog", "cow"])
    c = ds.load_paths([vp, mp], max_bytes=LIMIT)
    assert list(c.meta["label"]) == ["cat", "dog", "cow"]


def test_projector_tsv_alone_and_folder(tmp_path):
    vp, _ = write_projector(tmp_path, vectors(3, 2), ["cat", "dog", "cow"])
    assert load(vp).vectors.shape == (3, 2)
    c = load(tmp_path)  # the folder: vectors.tsv + metadata.tsv
    assert list(c.meta["label"]) == ["cat", "dog", "cow"]


def test_vectors_npy_with_metadata_csv(tmp_path):
    np.save(tmp_path / "v.npy", vectors(3, 2))
    pd.DataFrame({"id": ["a", "b", "c"], "colour": ["r", "g", "b"]}).to_csv(tmp_path / "metadata.csv", index=False)
    c = ds.load_paths([tmp_path / "v.npy", tmp_path / "metadata.csv"], max_bytes=LIMIT)
    assert list(c.meta["id"]) == ["a", "b", "c"] and list(c.meta["colour"]) == ["r", "g", "b"]


def test_zip_of_images(tmp_path):
    members = {"imgs/red.png": png_bytes((255, 0, 0)), "imgs/blue.png": png_bytes((0, 0, 255), (8, 30)),
               "other/red.png": png_bytes((0, 255, 0), mode="RGB"),
               "alpha.png": png_bytes((0, 0, 0, 0), mode="RGBA")}
    c = load(write_zip(tmp_path / "pics.zip", members))
    assert len(c) == 4 and c.dim == 768
    assert c.images.shape == (4, 64, 64, 3) and c.images.dtype == np.uint8
    assert list(c.meta.columns) == ["id", "filename", "width", "height"]
    assert list(c.meta["id"]) == ["red", "blue", "red-2", "alpha"]  # stems, de-duplicated
    assert c.meta.loc[1, "width"] == 8 and c.meta.loc[1, "height"] == 30
    assert tuple(c.images[0, 32, 32]) == (255, 0, 0)
    assert tuple(c.images[3, 32, 32]) == (255, 255, 255)  # transparency over white
    assert c.vectors.min() >= 0 and c.vectors.max() <= 1
    assert not (tmp_path / "imgs").exists()  # nothing extracted


def test_folder_of_images_with_custom_embedder(tmp_path):
    for i, col in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (tmp_path / f"im{i}.jpg").write_bytes(_jpeg(col))
    seen = {}

    def embedder(images):
        seen["shape"] = images.shape
        return images.reshape(len(images), -1, 3).mean(axis=1)

    embedder.image_size = 32
    c = load(tmp_path, image_embedder=embedder)
    assert seen["shape"] == (3, 32, 32, 3) and c.vectors.shape == (3, 3)
    assert c.images.shape == (3, 64, 64, 3)


def test_several_image_files(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        p.write_bytes(png_bytes((80 * i, 0, 0)))
        paths.append(p)
    assert len(ds.load_paths(paths, max_bytes=LIMIT)) == 3


def _jpeg(color):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, format="JPEG")
    return buf.getvalue()


def test_pixel_embedder():
    ims = np.zeros((2, 64, 64, 3), np.uint8)
    ims[1] = 255
    out = ds.pixel_embedder(ims)
    assert out.shape == (2, 768) and out.dtype == np.float32
    assert out[0].max() == 0 and out[1].min() == 1
    assert ds.pixel_embedder(np.zeros((1, 20, 30, 3), np.uint8)).shape == (1, 768)


# -- bad input (issue 2) ------------------------------------------------------------------


def bad(path, match, **kw):
    with pytest.raises(InputError, match=match) as info:
        load(path, **kw)
    return str(info.value)


def test_wrong_dimensions(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(5.0))
    assert "one.npy" in bad(tmp_path / "one.npy", "2-D")
    np.save(tmp_path / "three.npy", np.zeros((4, 2, 2)))
    bad(tmp_path / "three.npy", r"reshape")
    pd.DataFrame({"vector": [[1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.0]]}).to_parquet(tmp_path / "r.parquet")
    bad(tmp_path / "r.parquet", r"row 1 has 3 values but the first row has 2")


def test_nan_inf_rows(tmp_path):
    v = vectors(6, 3)
    v[2, 1] = np.nan
    v[4, 0] = np.inf
    np.save(tmp_path / "v.npy", v)
    msg = bad(tmp_path / "v.npy", "NaN or Inf")
    assert "2, 4" in msg
    pd.DataFrame(v, columns=list("abc")).to_csv(tmp_path / "v.csv", index=False)
    bad(tmp_path / "v.csv", "NaN or Inf")


def test_empty_file(tmp_path):
    for name in ("e.npy", "e.csv", "vectors.tsv", "e.zip", "e.parquet"):
        (tmp_path / name).write_bytes(b"")
        assert bad(tmp_path / name, "is empty").startswith(name)


def test_header_only_csv(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n")
    bad(tmp_path / "h.csv", "no rows")


def test_single_row(tmp_path):
    np.save(tmp_path / "v.npy", vectors(1, 4))
    bad(tmp_path / "v.npy", "only 1 row")
    write_zip(tmp_path / "one.zip", {"a.png": png_bytes((1, 2, 3))})
    bad(tmp_path / "one.zip", "only 1 readable image")


def test_all_duplicate_rows(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((5, 3)))
    bad(tmp_path / "v.npy", "identical")


def test_pickled_npy(tmp_path):
    write_pickled_npy(tmp_path / "p.npy", np.array([{"a": 1}, None], dtype=object))
    assert "p.npy" in bad(tmp_path / "p.npy", r"Python objects \(pickle\)")


def test_non_numeric_and_structured_npy(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"], ["c", "d"]]))
    bad(tmp_path / "s.npy", "not numbers")
    np.save(tmp_path / "st.npy", np.zeros(3, dtype=[("x", "f4"), ("y", "f4")]))
    bad(tmp_path / "st.npy", "structured")
    (tmp_path / "fake.npy").write_bytes(b"not a numpy file at all")
    bad(tmp_path / "fake.npy", "not a valid .npy")


@pytest.mark.parametrize("text, match", [
    ("1\t2\t3\n4\t5\n7\t8\t9\n", r"line 2 has 2 values but line 1 has 3"),
    ("1\t2\n3\t4\t5\n", r"line 2 has 3 values"),
    ("1\t2\n3\tabc\n", r"line 2, column 2: 'abc' is not a number"),
    ("x\ty\n1\t2\n3\t4\n", r"line 1, column 1: 'x' is not a number \(vectors.tsv has no header"),
    ("1\t2\n\n3\t4\n", r"line 2 is empty"),
    ("1\t2\n3\tnan\n", r"line 2, column 2 is 'nan'"),
])
def test_malformed_tsv(tmp_path, text, match):
    (tmp_path / "vectors.tsv").write_text(text)
    bad(tmp_path / "vectors.tsv", match)


def test_metadata_tsv_mismatch_and_ragged(tmp_path):
    vp, mp = write_projector(tmp_path, vectors(3, 2), ["a\tb", "1\t2", "3\t4"])
    with pytest.raises(InputError, match=r"metadata.tsv has 2 rows .* but vectors.tsv has 3"):
        ds.load_paths([vp, mp], max_bytes=LIMIT)
    mp.write_text("a\tb\n1\t2\n3\n5\t6\n")
    with pytest.raises(InputError, match=r"metadata.tsv: line 3 has 1 columns"):
        ds.load_paths([vp, mp], max_bytes=LIMIT)
    with pytest.raises(InputError, match="metadata without vectors"):
        ds.load_paths([mp], max_bytes=LIMIT)


def test_malformed_csv_value(tmp_path):
    rows = "\n".join(f"{i}.0,{i + 1}.5" for i in range(20))
    (tmp_path / "t.csv").write_text("a,b\n" + rows.replace("7.5", "7.5x") + "\n")
    bad(tmp_path / "t.csv", r"column 'b', line 8: '7.5x' is not a number")


def test_non_image_files_in_zip_are_skipped_and_reported(tmp_path):
    members = {"a.png": png_bytes((255, 0, 0)), "b.png": png_bytes((0, 255, 0)), "readme.txt": b"hello",
               "data.csv": b"1,2", "broken.png": b"\x89PNG not really", "__MACOSX/._a.png": b"junk"}
    c = load(write_zip(tmp_path / "z.zip", members))
    assert len(c) == 2
    notes = " ".join(c.notes)
    assert "2 non-image" in notes and "readme.txt" in notes and "data.csv" in notes
    assert "could not be decoded" in notes and "broken.png" in notes
    write_zip(tmp_path / "none.zip", {"readme.txt": b"hello"})
    assert "readme.txt" in bad(tmp_path / "none.zip", "no readable images")


@pytest.mark.parametrize("evil", ["../evil.png", "a/../../evil.png", "/abs/evil.png", "..\\evil.png"])
def test_zip_slip_is_rejected(tmp_path, evil):
    members = {"ok.png": png_bytes((1, 2, 3)), "ok2.png": png_bytes((3, 2, 1)), evil: png_bytes((0, 0, 0))}
    msg = bad(write_zip(tmp_path / "slip.zip", members), "zip-slip")
    assert repr(evil) in msg
    assert not (tmp_path.parent / "evil.png").exists()


def test_zip_bomb_limits(tmp_path):
    from backends.corpora.limits import UploadLimits

    members = {f"{i}.png": b"\0" * 50_000 for i in range(3)}  # compresses to almost nothing
    p = write_zip_deflated(tmp_path / "bomb.zip", members)
    bad(p, r"expands to .* over the limit", max_bytes=30_000)
    bad(p, r"3 entries; at most 2", limits=UploadLimits(max_archive_members=2))


def write_zip_deflated(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_upload_over_size_limit(tmp_path):
    np.save(tmp_path / "big.npy", vectors(200, 50))
    msg = bad(tmp_path / "big.npy", r"over the upload limit", max_bytes=10_000)
    assert "big.npy is 39.2 KB" in msg and "9.8 KB" in msg
    with pytest.raises(InputError, match="together are"):
        np.save(tmp_path / "a.npy", vectors(20, 20))
        ds.load_paths([tmp_path / "a.npy", tmp_path / "a.npy"], max_bytes=2000)


def test_unknown_extension_and_missing_path(tmp_path):
    (tmp_path / "x.docx").write_bytes(b"hello")
    msg = bad(tmp_path / "x.docx", "unsupported file type")
    assert ".npy" in msg and ".parquet" in msg and "vectors.tsv" in msg
    bad(tmp_path / "nope.npy", "no such file")
    (tmp_path / "pic.png").write_bytes(png_bytes((1, 1, 1)))
    bad(tmp_path / "pic.png", "a single image")


def test_corrupt_parquet_and_zip(tmp_path):
    (tmp_path / "c.parquet").write_bytes(b"PAR1 garbage")
    bad(tmp_path / "c.parquet", "could not read as parquet")
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04 garbage")
    bad(tmp_path / "c.zip", "not a valid zip")


def test_csv_without_vectors(tmp_path):
    pd.DataFrame({"name": ["a", "b"], "colour": ["r", "g"]}).to_csv(tmp_path / "t.csv", index=False)
    bad(tmp_path / "t.csv", "found no vectors")


# -- export --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_export_round_trip(tmp_path, fmt):
    v = vectors(6, 3)
    meta = pd.DataFrame({"id": [f"i{k}" for k in range(6)], "label": [0, 1, 2, 0, 1, 2], "text": list("abcdef")})
    from backends.corpora.corpus import Corpus

    c = Corpus(name="demo corpus", vectors=v, meta=meta)
    xy = np.arange(12, dtype=float).reshape(6, 2) / 3
    sel = [4, 1, 5]
    out = ds.export_rows(c, sel, xy, fmt, tmp_path / f"sel.{fmt}")
    if fmt == "csv":
        back = pd.read_csv(out)
    elif fmt == "parquet":
        back = pd.read_parquet(out)
    else:
        back = pd.DataFrame([json.loads(line) for line in open(out)])
    assert list(back.columns) == ["id", "label", "text", "x", "y"]
    assert list(back["id"]) == ["i4", "i1", "i5"] and list(back["label"]) == [1, 1, 2]
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), xy[sel])
    # coordinates of the selection only, and a folder as the destination
    out2 = ds.export_rows(c, sel, xy[sel], fmt, tmp_path)
    assert out2.endswith(f"demo_corpus-selection.{fmt}")


def test_export_bad_arguments(tmp_path):
    c = load_corpus("digits")
    xy = np.zeros((len(c), 2))
    with pytest.raises(InputError, match="Unknown export format"):
        ds.export_rows(c, [0], xy, "xlsx", tmp_path / "a")
    with pytest.raises(InputError, match="no items selected"):
        ds.export_rows(c, [], xy, "csv", tmp_path / "a.csv")
    with pytest.raises(InputError, match="out of range"):
        ds.export_rows(c, [5000], xy, "csv", tmp_path / "a.csv")
    with pytest.raises(InputError, match="xy has 3 rows"):
        ds.export_rows(c, [0, 1], xy[:3], "csv", tmp_path / "a.csv")


def test_npz_skips_pickled_members(tmp_path):
    np.savez(tmp_path / "a.npz", objs=np.array([{"a": 1}, None], dtype=object), emb=vectors(4, 2))
    c = load(tmp_path / "a.npz")
    assert c.vectors.shape == (4, 2) and any("'objs'" in n and "pickle" in n for n in c.notes)
    np.savez(tmp_path / "b.npz", objs=np.array([{"a": 1}, None], dtype=object))
    bad(tmp_path / "b.npz", "no numeric 2-D array")


def test_csv_semicolons_and_headerless_line_numbers(tmp_path):
    (tmp_path / "s.csv").write_text("a;b;name\n1;2;x\n3;5;y\n")
    c = load(tmp_path / "s.csv")
    assert c.vectors.shape == (2, 2) and list(c.meta["name"]) == ["x", "y"]
    lines = [f"{i}.0,{i}.5" for i in range(20)]
    lines[9] = "9.0,oops"
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    bad(tmp_path / "h.csv", r"line 10: 'oops' is not a number")


def test_corrupt_zip_member_is_skipped(tmp_path):
    p = write_zip(tmp_path / "z.zip", {"a.png": png_bytes((255, 0, 0)), "b.png": png_bytes((0, 255, 0)),
                                       "c.png": png_bytes((0, 0, 255))})
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("c.png")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 20] ^= 0xFF  # corrupt c.png's stored bytes: bad CRC
    p.write_bytes(bytes(raw))
    c = load(p)
    assert len(c) == 2 and "c.png" in " ".join(c.notes)


def test_lone_csv_with_meta_in_its_name_is_read_as_vectors(tmp_path):
    pd.DataFrame(vectors(4, 3), columns=list("abc")).to_csv(tmp_path / "metadata_and_vectors.csv", index=False)
    assert load(tmp_path / "metadata_and_vectors.csv").vectors.shape == (4, 3)


def test_zipped_projector_files(tmp_path):
    v = "\n".join("\t".join(str(x) for x in r) for r in vectors(3, 2))
    c = load(write_zip(tmp_path / "proj.zip", {"export/vectors.tsv": v.encode(), "export/metadata.tsv": b"a\nb\nc\n"}))
    assert c.vectors.shape == (3, 2) and list(c.meta["label"]) == ["a", "b", "c"]
