"""A corpus of bad uploads (issue #20): each named file either loads, or raises InputError with a
message naming what was wrong, within a time bound; no other exception escapes the loaders.

Every file is generated in tmp_path. The 6-million-column CSV is in tests/test_upload_limits.py.
"""
from __future__ import annotations

import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from backends.corpora import loaders as ds
from backends.corpora.corpus import Corpus
from backends.corpora.limits import UploadLimits
from backends.errors import InputError
from conftest import write_pickled_npy

MB = 1024 * 1024
LIMIT = 5 * MB
SECONDS = 10.0  # per file, generous for a loaded CI machine; most take well under a second


def vectors(n=12, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def png(color=(200, 30, 30), size=(20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def big_png(w: int, h: int) -> bytes:
    """A valid 1-bit PNG of w × h pixels, all black, a few KB: compressed row by row, never in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (w + 7) // 8)
    z = zlib.compressobj(6)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_header(w: int, h: int) -> bytes:
    """The markers of a baseline JPEG that declares w × h (no pixel data: PIL opens it, never decodes it)."""
    sof = struct.pack(">BHHB", 8, h, w, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sos = struct.pack(">B", 3) + b"\x01\x00\x02\x00\x03\x00" + b"\x00\x3f\x00"
    return (b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof
            + b"\xff\xda" + struct.pack(">H", len(sos) + 2) + sos + b"\x00" * 16 + b"\xff\xd9")


def gif_header(w: int, h: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00" + b"\x3b"


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def write_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def csv_text(v: np.ndarray, names=None) -> str:
    names = names or [f"d{j}" for j in range(v.shape[1])]
    return ",".join(names) + "\n" + "\n".join(",".join(repr(float(x)) for x in row) for row in v) + "\n"


# -- builders: (tmp_path) -> path(s) to load -------------------------------------------------


def zip_bomb(tmp: Path) -> Path:
    """One entry of 64 MB of zeros, deflated to about 64 KB (1000:1), next to two real images."""
    p = tmp / "bomb.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", png())
        zf.writestr("b.png", png((0, 0, 200)))
        with zf.open("zeros.png", "w") as f:
            block = b"\0" * MB
            for _ in range(64):
                f.write(block)
    return p


def zip_lying_sizes(tmp: Path) -> Path:
    """An entry that declares 1,000 bytes but inflates to 8 MB (sizes patched in both headers)."""
    p = write_zip(tmp / "liar.zip", {"a.png": png(), "b.png": png((0, 90, 0)), "liar.png": b"\0" * (8 * MB)},
                  compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        info = zf.getinfo("liar.png")
    struct.pack_into("<I", raw, info.header_offset + 22, 1000)  # local header: uncompressed size
    at = 0
    while True:  # the central-directory record of liar.png: uncompressed size at +24
        at = raw.find(b"PK\x01\x02", at)
        if at < 0:
            break
        name_len = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46: at + 46 + name_len] == b"liar.png":
            struct.pack_into("<I", raw, at + 24, 1000)
        at += 4
    p.write_bytes(bytes(raw))
    return p


def zip_many_entries(tmp: Path) -> Path:
    return write_zip(tmp / "many.zip", {f"{i}.png": png((i, i, i)) for i in range(30)})


def zip_nested(tmp: Path) -> Path:
    inner = write_zip(tmp / "inner.zip", {"x.png": png(), "y.png": png((1, 2, 3))}).read_bytes()
    return write_zip(tmp / "nested.zip", {"a.png": png(), "b.png": png((0, 0, 90)), "deeper/inner.zip": inner,
                                          "more.tar.gz": b"\x1f\x8b junk"})


def zip_nested_only(tmp: Path) -> Path:
    inner = write_zip(tmp / "inner.zip", {"x.png": png(), "y.png": png((1, 2, 3))}).read_bytes()
    return write_zip(tmp / "only_nested.zip", {"inner.zip": inner})


def zip_huge_png(tmp: Path) -> Path:
    return write_zip(tmp / "huge_png.zip", {"a.png": png(), "b.png": png((0, 0, 200)),
                                            "big.png": big_png(20_000, 20_000)}, compression=zipfile.ZIP_DEFLATED)


def zip_huge_headers(tmp: Path) -> Path:
    """Images over the pixel limit that PIL itself would refuse (30000²) or open (7000²): JPEG and GIF."""
    return write_zip(tmp / "huge_headers.zip", {
        "a.png": png(), "b.png": png((0, 0, 200)), "bomb.jpg": jpeg_header(30_000, 30_000),
        "wide.jpg": jpeg_header(7_000, 7_000), "screen.gif": gif_header(40_000, 40_000),
    })


def zip_broken_images(tmp: Path) -> Path:
    good = png()
    return write_zip(tmp / "broken.zip", {"a.png": good, "b.png": png((9, 9, 9)), "half.png": good[: len(good) // 2],
                                          "empty.png": b"", "text.jpg": b"hello, I am not a JPEG"})


def zip_slip(tmp: Path) -> Path:
    return write_zip(tmp / "slip.zip", {"ok.png": png(), "../../etc/evil.png": png()})


def zip_of_garbage(tmp: Path) -> Path:
    return write(tmp / "garbage.zip", b"PK\x03\x04" + os.urandom(2000))


def csv_wide_columns(tmp: Path) -> Path:
    """200,000 columns in one line (the limit is 100,000)."""
    return write(tmp / "wide.csv", b"1," * 199_999 + b"1\n" + b"2," * 199_999 + b"2\n")


def csv_many_cells(tmp: Path) -> Path:
    return write(tmp / "cells.csv", csv_text(vectors(400, 50)))


def csv_utf16(tmp: Path) -> Path:
    text = "a,b,name\n" + "\n".join(f"{i}.5,{i * 2}.25,élan{i}" for i in range(6)) + "\n"
    return write(tmp / "utf16.csv", text.encode("utf-16"))  # with a byte-order mark


def csv_utf16_no_bom(tmp: Path) -> Path:
    text = "a,b\n" + "\n".join(f"{i}.5,{i * 3}.0" for i in range(6)) + "\n"
    return write(tmp / "utf16_nobom.csv", text.encode("utf-16-le"))


def csv_utf16_be(tmp: Path) -> Path:
    text = "a,b\n" + "\n".join(f"{i}.5,{i * 3}.0" for i in range(6)) + "\n"
    return write(tmp / "utf16_be.csv", b"\xfe\xff" + text.encode("utf-16-be"))


def csv_latin1(tmp: Path) -> Path:
    text = "x,y,city\n" + "\n".join(f"{i}.0,{i % 3}.5,{c}" for i, c in enumerate(["café", "Zürich", "Málaga", "Køge"])) + "\n"
    return write(tmp / "latin1.csv", text.encode("latin-1"))


def csv_utf8_bom(tmp: Path) -> Path:
    return write(tmp / "bom.csv", "\ufeff".encode() + csv_text(vectors(5, 3), ["a", "b", "c"]).encode())


def csv_bad_utf16(tmp: Path) -> Path:
    return write(tmp / "bad_utf16.csv", b"\xff\xfe" + "a,b\n1,2\n".encode("utf-16-le") + b"\x00\xd8")  # lone surrogate


def npy_1e300(tmp: Path) -> Path:
    v = vectors(6, 3).astype(np.float64)
    v[2, 1] = 1e300
    np.save(tmp / "huge.npy", v)
    return tmp / "huge.npy"


def csv_minus_1e300(tmp: Path) -> Path:
    v = vectors(6, 3).astype(np.float64)
    v[4, 0] = -1e300
    return write(tmp / "neg_huge.csv", csv_text(v))


def npy_pickled(tmp: Path) -> Path:
    write_pickled_npy(tmp / "pickled.npy", np.array([{"a": 1}, None], dtype=object))
    return tmp / "pickled.npy"


def npy_raw_pickle(tmp: Path) -> Path:
    import pickle

    return write(tmp / "raw_pickle.npy", pickle.dumps([[1.0, 2.0], [3.0, 4.0]], protocol=4))


def npy_object_2d(tmp: Path) -> Path:
    write_pickled_npy(tmp / "objects.npy", np.array([[1, "a"], [2, "b"]], dtype=object))
    return tmp / "objects.npy"


def npy_nan_rows(tmp: Path) -> Path:
    v = vectors(8, 3)
    v[1, 1], v[5, 2] = np.nan, -np.inf
    np.save(tmp / "nan.npy", v)
    return tmp / "nan.npy"


def npy_truncated(tmp: Path) -> Path:
    np.save(tmp / "trunc.npy", vectors(1000, 64))
    data = (tmp / "trunc.npy").read_bytes()
    return write(tmp / "trunc.npy", data[: len(data) // 3])


def npy_huge_shape(tmp: Path) -> Path:
    """A header that declares a billion × 1,000 float32 and holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 1000)})
    return write(tmp / "huge_shape.npy", buf.getvalue() + b"\0" * 16)


def npy_structured(tmp: Path) -> Path:
    np.save(tmp / "structured.npy", np.zeros(4, dtype=[("x", "f4"), ("y", "f4")]))
    return tmp / "structured.npy"


def npy_complex(tmp: Path) -> Path:
    np.save(tmp / "complex.npy", vectors(4, 2) + 1j)
    return tmp / "complex.npy"


def npy_strings(tmp: Path) -> Path:
    np.save(tmp / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    return tmp / "strings.npy"


def npz_pickles(tmp: Path) -> Path:
    np.savez(tmp / "mixed.npz", objs=np.array([{"a": 1}, None], dtype=object), emb=vectors(4, 3))
    return tmp / "mixed.npz"


def npz_only_pickles(tmp: Path) -> Path:
    np.savez(tmp / "objs.npz", objs=np.array([{"a": 1}, None], dtype=object))
    return tmp / "objs.npz"


def npz_bomb(tmp: Path) -> Path:
    """np.savez_compressed of 100 MB of zeros: about 100 KB on disk."""
    np.savez_compressed(tmp / "bomb.npz", emb=np.zeros((250_000, 100), np.float32))
    return tmp / "bomb.npz"


def npz_lying_header(tmp: Path) -> Path:
    """A member whose .npy header declares 10⁷ float64 (80 MB) but which holds 16 bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**5, 100)})
    with zipfile.ZipFile(tmp / "liar.npz", "w") as zf:
        zf.writestr("emb.npy", buf.getvalue() + b"\0" * 16)
    return tmp / "liar.npz"


def npz_with_text_member(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "extra.npz", "w") as zf:
        b = io.BytesIO()
        np.save(b, vectors(5, 3))
        zf.writestr("emb.npy", b.getvalue())
        zf.writestr("README.txt", b"not an array")
    return tmp / "extra.npz"


def parquet_mixed_lists(tmp: Path) -> Path:
    pd.DataFrame({"vector": [[1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.0]]}).to_parquet(tmp / "ragged.parquet")
    return tmp / "ragged.parquet"


def parquet_list_column_unnamed(tmp: Path) -> Path:
    v = vectors(5, 4)
    pd.DataFrame({"feats": [list(map(float, r)) for r in v], "tag": list("abcde")}).to_parquet(tmp / "lists.parquet")
    return tmp / "lists.parquet"


def parquet_wide(tmp: Path) -> Path:
    pd.DataFrame(vectors(4, 120), columns=[f"c{j}" for j in range(120)]).to_parquet(tmp / "wide.parquet")
    return tmp / "wide.parquet"


def parquet_corrupt(tmp: Path) -> Path:
    return write(tmp / "corrupt.parquet", b"PAR1" + os.urandom(500) + b"PAR1")


def csv_binary_garbage(tmp: Path) -> Path:
    return write(tmp / "garbage.csv", np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def csv_is_a_zip(tmp: Path) -> Path:
    return write(tmp / "renamed.csv", write_zip(tmp / "x.zip", {"a.txt": b"hi"}).read_bytes())


def csv_is_a_png(tmp: Path) -> Path:
    return write(tmp / "picture.csv", png())


def csv_is_gzip(tmp: Path) -> Path:
    import gzip

    return write(tmp / "packed.csv", gzip.compress(csv_text(vectors()).encode()))


def csv_empty(tmp: Path) -> Path:
    return write(tmp / "empty.csv", b"")


def csv_blank_lines(tmp: Path) -> Path:
    return write(tmp / "blank.csv", "\n\r\n\n")


def csv_header_only(tmp: Path) -> Path:
    return write(tmp / "header.csv", "a,b,c\n")


def csv_ragged_long(tmp: Path) -> Path:
    return write(tmp / "ragged_long.csv", "a,b\n1,2\n3,4,5,6\n7,8\n")


def csv_ragged_short(tmp: Path) -> Path:
    return write(tmp / "ragged_short.csv", "a,b,c\n1,2,3\n4,5\n7,8,9\n")


def csv_only_text(tmp: Path) -> Path:
    return write(tmp / "words.csv", "name,colour\napple,red\npear,green\n")


def csv_typo(tmp: Path) -> Path:
    rows = [f"{i}.0,{i + 1}.5" for i in range(30)]
    rows[17] = "17.0,18.5O"
    return write(tmp / "typo.csv", "a,b\n" + "\n".join(rows) + "\n")


def csv_one_row(tmp: Path) -> Path:
    return write(tmp / "one.csv", "a,b\n1,2\n")


def csv_identical(tmp: Path) -> Path:
    return write(tmp / "same.csv", "a,b\n" + "1,2\n" * 5)


def csv_formulas(tmp: Path) -> Path:
    v = vectors(4, 2)
    cells = ["=HYPERLINK(\"http://evil\")", "+1+2", "@SUM(A1:A2)", "-cmd|' /C calc'!A0"]
    text = "x,y,note\n" + "\n".join(f"{a},{b},\"{c}\"" for (a, b), c in zip(v.tolist(), cells)) + "\n"
    return write(tmp / "formulas.csv", text)


def csv_cr_only(tmp: Path) -> Path:
    return write(tmp / "mac.csv", csv_text(vectors(5, 3)).replace("\n", "\r"))


def csv_quoted_newlines(tmp: Path) -> Path:
    v = vectors(3, 2)
    text = "x,y,text\n" + "\n".join(f"{a},{b},\"line one\nline two {i}\"" for i, (a, b) in enumerate(v.tolist())) + "\n"
    return write(tmp / "quoted.csv", text)


def csv_wide_mixed(tmp: Path) -> Path:
    """4,000 text columns and 4,000 numeric ones: metadata is capped at 1,000 columns."""
    n = 8_000
    rng = np.random.default_rng(3)
    head = ",".join(f"c{j}" for j in range(n))
    rows = [",".join(f"w{i}x{j}" if j % 2 else f"{rng.normal():.3f}" for j in range(n)) for i in range(4)]
    return write(tmp / "wide_mixed.csv", head + "\n" + "\n".join(rows) + "\n")


def csv_with_pandas_index(tmp: Path) -> Path:
    """df.to_csv() with its index: an unnamed first column 0, 1, 2, … that is not a dimension."""
    pd.DataFrame(vectors(6, 3), columns=list("abc")).to_csv(tmp / "indexed.csv")
    return tmp / "indexed.csv"


def csv_string_vectors_ragged(tmp: Path) -> Path:
    return write(tmp / "vec_ragged.csv", 'id,vector\na,"[1, 2, 3]"\nb,"[4, 5]"\nc,"[6, 7, 8]"\n')


def tsv_ragged(tmp: Path) -> Path:
    return write(tmp / "vectors.tsv", "1\t2\t3\n4\t5\n")


def tsv_utf16(tmp: Path) -> Path:
    text = "\n".join("\t".join(f"{x:.4f}" for x in r) for r in vectors(4, 3)) + "\n"
    return write(tmp / "vectors.tsv", text.encode("utf-16"))


def tsv_wide(tmp: Path) -> Path:
    return write(tmp / "vectors.tsv", b"1\t" * 149_999 + b"1\n")


def folder_symlink_out(tmp: Path) -> Path:
    outside = tmp / "secret"
    outside.mkdir()
    write(outside / "secret.png", png((7, 7, 7)))
    write(outside / "passwd.png", png((8, 8, 8)))
    d = tmp / "pics"
    d.mkdir()
    write(d / "a.png", png())
    write(d / "b.png", png((0, 0, 100)))
    (d / "leak.png").symlink_to(outside / "secret.png")
    (d / "outside").symlink_to(outside, target_is_directory=True)
    return d


def folder_symlink_loop(tmp: Path) -> Path:
    d = tmp / "loop"
    (d / "sub").mkdir(parents=True)
    write(d / "a.png", png())
    write(d / "sub" / "b.png", png((0, 100, 0)))
    (d / "sub" / "again").symlink_to(d, target_is_directory=True)  # a cycle through a directory link
    (d / "x.png").symlink_to(d / "y.png")
    (d / "y.png").symlink_to(d / "x.png")  # a loop between two file links
    return d


def folder_empty_but_links(tmp: Path) -> Path:
    d = tmp / "links_only"
    d.mkdir()
    (d / "x.png").symlink_to(d / "x.png")
    return d


def pair_metadata_mismatch(tmp: Path) -> list[Path]:
    np.save(tmp / "v.npy", vectors(4, 3))
    return [tmp / "v.npy", write(tmp / "metadata.csv", "id,colour\na,r\nb,g\n")]


def pair_metadata_utf16(tmp: Path) -> list[Path]:
    np.save(tmp / "v.npy", vectors(3, 3))
    return [tmp / "v.npy", write(tmp / "metadata.csv", "id,city\na,Zürich\nb,Köln\nc,Łódź\n".encode("utf-16"))]


def unknown_extension(tmp: Path) -> Path:
    return write(tmp / "data.xlsx", b"PK\x03\x04 an excel file")


# -- expectations --------------------------------------------------------------------------


@dataclass
class Case:
    build: Callable[[Path], Path | list[Path]]
    error: str | None = None  # regex the InputError must match; None: it loads
    check: Callable[[Corpus], None] | None = None
    limits: UploadLimits | None = None
    notes: list[str] = field(default_factory=list)  # substrings the notes must hold (when it loads)


def _notes(c: Corpus) -> str:
    return " ".join(c.notes)


CASES: dict[str, Case] = {
    "zip bomb (64 MB of zeros in 64 KB)": Case(zip_bomb, r"bomb.zip: expands to 64\.\d MB, over the limit of 20\.0 MB"),
    "zip entry lying about its size": Case(zip_lying_sizes, None, notes=["liar.png", "could not read"]),
    "zip with more entries than the limit": Case(zip_many_entries, r"30 entries; at most 20",
                                                 limits=UploadLimits(max_archive_members=20)),
    "zip with nested archives": Case(zip_nested, None, notes=["2 archive(s) inside", "deeper/inner.zip",
                                                              "more.tar.gz"]),
    "zip holding only a zip": Case(zip_nested_only, r"no readable images.*not opened.*inner\.zip"),
    "zip with a 20000×20000 PNG": Case(zip_huge_png, None, notes=[
        "over the limit of 40 megapixels", "big.png (20000×20000 = 400 megapixels)"]),
    "zip with huge JPEG/GIF headers": Case(zip_huge_headers, None, notes=[
        "3 image(s) over the limit", "bomb.jpg (900 megapixels)", "wide.jpg (7000×7000 = 49 megapixels)",
        "screen.gif (40000×40000"]),
    "zip with broken images": Case(zip_broken_images, None, notes=["3 image(s) that could not be decoded",
                                                                   "half.png (cannot identify image file)",
                                                                   "empty.png", "text.jpg"]),
    "zip slip": Case(zip_slip, r"zip-slip"),
    "zip of garbage": Case(zip_of_garbage, r"garbage.zip: not a valid zip file"),
    "CSV with 200,000 columns": Case(csv_wide_columns, r"200,000 columns in its first line, over the limit of 100,000"),
    "CSV over the cell limit": Case(csv_many_cells, r"about 401 lines × 50 columns = 20,050 cells, over the limit "
                                                    r"of 10,000 cells", limits=UploadLimits(max_cells=10_000)),
    "CSV in UTF-16 with a BOM": Case(csv_utf16, None, check=lambda c: c.meta["name"].iloc[0] == "élan0",
                                     notes=["read as UTF-16 (little-endian)", "byte-order mark"]),
    "CSV in UTF-16 without a BOM": Case(csv_utf16_no_bom, None, notes=["UTF-16 (little-endian)", "NUL bytes"]),
    "CSV in UTF-16 big-endian": Case(csv_utf16_be, None, notes=["UTF-16 (big-endian)"]),
    "CSV in Latin-1": Case(csv_latin1, None, check=lambda c: list(c.meta["city"])[:2] == ["café", "Zürich"],
                           notes=["not valid UTF-8 (byte 0xe9", "Windows-1252"]),
    "CSV in UTF-8 with a BOM": Case(csv_utf8_bom, None, check=lambda c: c.vectors.shape == (5, 3)),
    "CSV claiming UTF-16 but broken": Case(csv_bad_utf16, r"looks like UTF-16 .* not valid UTF-16"),
    "float64 npy with 1e300": Case(npy_1e300, r"values up to 1e\+300 exceed float32's range \(±3\.4e38\) in 1 row"),
    "CSV with -1e300": Case(csv_minus_1e300, r"values down to -1e\+300 exceed float32's range"),
    "pickled npy": Case(npy_pickled, r"Python objects \(pickle\)"),
    "raw pickle named .npy": Case(npy_raw_pickle, r"pickle"),
    "object 2-D array npy": Case(npy_object_2d, r"Python objects \(pickle\)"),
    "npy with NaN and Inf rows": Case(npy_nan_rows, r"2 row\(s\) contain NaN or Inf \(rows 1, 5\)"),
    "truncated npy": Case(npy_truncated, r"declares shape \(1000, 64\).*holds only.*truncated"),
    "npy declaring a billion rows": Case(npy_huge_shape, r"shape \(1000000000, 1000\) is 1,000,000,000,000 values, "
                                                         r"over the limit of 50,000,000"),
    "structured npy": Case(npy_structured, r"structured array"),
    "complex npy": Case(npy_complex, r"complex numbers"),
    "string npy": Case(npy_strings, r"not numbers"),
    "npz with a pickled member": Case(npz_pickles, None, notes=["'objs'", "pickle"]),
    "npz with only pickles": Case(npz_only_pickles, r"no numeric 2-D array.*pickle"),
    "npz bomb (100 MB of zeros)": Case(npz_bomb, r"bomb.npz: expands to 95\.4 MB, over the limit of 20\.0 MB"),
    "npz member with a lying header": Case(npz_lying_header, r"array 'emb'.*declares shape \(100000, 100\).*76\.3 MB.*holds only 16 bytes"),
    "npz with a text member": Case(npz_with_text_member, None, notes=["'README.txt'", "not a .npy array"]),
    "parquet list column of mixed lengths": Case(parquet_mixed_lists, r"row 1 has 3 values but the first row has 2"),
    "parquet list column found by content": Case(parquet_list_column_unnamed, None,
                                                 check=lambda c: c.vectors.shape == (5, 4)),
    "parquet over the column limit": Case(parquet_wide, r"120 columns, over the limit of 100 columns",
                                          limits=UploadLimits(max_columns=100)),
    "corrupt parquet": Case(parquet_corrupt, r"could not read as parquet"),
    "binary garbage named .csv": Case(csv_binary_garbage, r"garbage.csv: binary data, not CSV text"),
    "zip renamed .csv": Case(csv_is_a_zip, r"renamed.csv: this is a zip archive"),
    "PNG renamed .csv": Case(csv_is_a_png, r"this is a PNG image, not CSV text"),
    "gzip renamed .csv": Case(csv_is_gzip, r"packed.csv: this is gzip-compressed data, not CSV text; decompress it first"),
    "empty CSV": Case(csv_empty, r"empty.csv is empty"),
    "CSV of blank lines": Case(csv_blank_lines, r"no columns \(the file holds only blank lines\)"),
    "CSV with only a header": Case(csv_header_only, r"no rows \(only a header\)"),
    "CSV with a row too long": Case(csv_ragged_long, r"could not read as csv .*Expected 2 fields in line 3, saw 4"),
    "CSV with a row too short": Case(csv_ragged_short, r"1 row\(s\) contain NaN or Inf \(rows 1\)"),
    "CSV of words only": Case(csv_only_text, r"found no vectors.*columns are: name, colour"),
    "CSV with a typo in a number": Case(csv_typo, r"column 'b', line 19: '18.5O' is not a number"),
    "CSV with one row": Case(csv_one_row, r"only 1 row"),
    "CSV of identical rows": Case(csv_identical, r"all 5 rows are identical"),
    "CSV with formulas in cells": Case(csv_formulas, None, check=lambda c: c.meta["note"].iloc[0].startswith("=")),
    "CSV with old Mac line ends": Case(csv_cr_only, None, check=lambda c: c.vectors.shape == (5, 3)),
    "CSV with quoted newlines": Case(csv_quoted_newlines, None, check=lambda c: "\n" in c.meta["text"].iloc[0]),
    "CSV with 8,000 mixed columns": Case(csv_wide_mixed, None, check=lambda c: c.vectors.shape == (4, 4000)
                                         and len(c.meta.columns) == 1001,  # + id
                                         notes=["4,000 metadata columns, over the limit of 1,000"]),
    "CSV saved with its pandas index": Case(csv_with_pandas_index, None,
                                            check=lambda c: c.vectors.shape == (6, 3)
                                            and list(c.meta["Unnamed: 0"]) == list(range(6)),
                                            notes=["numeric column(s) 'Unnamed: 0' kept as metadata"]),
    "CSV vector column of mixed lengths": Case(csv_string_vectors_ragged, r"column 'vector', line 3 has 2 values"),
    "ragged vectors.tsv": Case(tsv_ragged, r"line 2 has 2 values but line 1 has 3"),
    "vectors.tsv in UTF-16": Case(tsv_utf16, None, check=lambda c: c.vectors.shape == (4, 3), notes=["UTF-16"]),
    "vectors.tsv with 150,000 columns": Case(tsv_wide, r"150,000 columns in its first line, over the limit of 100,000"),
    "folder with links to outside": Case(folder_symlink_out, None,
                                         check=lambda c: sorted(c.meta["filename"]) == ["a.png", "b.png"],
                                         notes=["2 symbolic link(s), which are not followed", "leak.png", "outside"]),
    "folder with a symlink loop": Case(folder_symlink_loop, None,
                                       check=lambda c: sorted(c.meta["filename"]) == ["a.png", "sub/b.png"],
                                       notes=["3 symbolic link(s)", "sub/again", "x.png", "y.png"]),
    "folder of only a looping link": Case(folder_empty_but_links, r"the folder is empty.*1 symbolic link"),
    "metadata with too few rows": Case(pair_metadata_mismatch, r"metadata.csv has 2 rows but v.npy has 4 vectors"),
    "metadata in UTF-16": Case(pair_metadata_utf16, None, check=lambda c: list(c.meta["city"]) == ["Zürich", "Köln", "Łódź"],
                               notes=["metadata.csv: read as UTF-16"]),
    "unknown extension": Case(unknown_extension, r"unsupported file type '.xlsx' \(a spreadsheet: save it as CSV\)"),
}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


def run_case(case: Case, tmp_path: Path):
    target = case.build(tmp_path)
    t0 = time.perf_counter()
    try:
        if isinstance(target, list):
            out = ds.load_paths(target, max_bytes=LIMIT, limits=case.limits)
        else:
            out = ds.load_path(target, max_bytes=LIMIT, limits=case.limits)
    except InputError as exc:  # any other exception type fails the test
        out = exc
    return out, time.perf_counter() - t0


@pytest.mark.parametrize("label", list(CASES))
def test_bad_file(label, tmp_path):
    case = CASES[label]
    out, seconds = run_case(case, tmp_path)
    assert seconds < SECONDS, f"{label}: took {seconds:.1f} s"
    if case.error is None:
        assert isinstance(out, Corpus), f"{label}: expected to load, got InputError: {out}"
        notes = _notes(out)
        for want in case.notes:
            assert want in notes, f"{label}: {want!r} not in notes: {notes}"
        if case.check is not None:
            assert case.check(out), f"{label}: check failed"
    else:
        assert isinstance(out, InputError), f"{label}: loaded, but expected an error matching {case.error!r}"
        import re

        assert re.search(case.error, str(out), re.S), f"{label}: message {str(out)!r} does not match {case.error!r}"


# -- property tests: damaged copies of valid files ----------------------------------------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # optional: `pip install hypothesis` to run these
    st = None


def _valid_files(tmp: Path) -> dict[str, bytes]:
    v = vectors(10, 4)
    np.save(tmp / "v.npy", v)
    np.savez(tmp / "v.npz", emb=v, labels=np.arange(10))
    pd.DataFrame({"id": [f"i{k}" for k in range(10)], "embedding": list(v)}).to_parquet(tmp / "v.parquet")
    return {
        "v.npy": (tmp / "v.npy").read_bytes(),
        "v.npz": (tmp / "v.npz").read_bytes(),
        "v.parquet": (tmp / "v.parquet").read_bytes(),
        "v.csv": csv_text(v).encode(),
        "vectors.tsv": ("\n".join("\t".join(f"{x:.5f}" for x in r) for r in v) + "\n").encode(),
        "pics.zip": write_zip(tmp / "pics.zip", {f"{k}.png": png((20 * k, 0, 0)) for k in range(3)}).read_bytes(),
    }


if st is not None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.sampled_from(["v.npy", "v.npz", "v.parquet", "v.csv", "vectors.tsv", "pics.zip"]),
           cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
           insert=st.binary(max_size=40))
    def test_damaged_files_raise_only_input_error(tmp_path, name, cut, flips, insert):
        files = _valid_files(tmp_path)
        data = bytearray(files[name])
        for where, byte in flips:
            data[min(int(where * len(data)), len(data) - 1)] = byte
        at = int(cut * len(data))
        data = bytes(data[:at]) + insert + bytes(data[at:]) if insert else bytes(data[: max(at, 1)])
        p = tmp_path / "damaged" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        t0 = time.perf_counter()
        try:
            c = ds.load_path(p, max_bytes=LIMIT)
            assert isinstance(c, Corpus) and np.isfinite(c.vectors).all()
        except InputError as exc:
            assert str(exc)
        assert time.perf_counter() - t0 < SECONDS
else:
    def test_damaged_files_raise_only_input_error():
        pytest.skip("hypothesis is not installed")
