"""Upload limits (issue #20 items 1, 2 and 8): wide CSVs refused early, loaded fast; every refusal
names the limit and the measured value; Settings override the limits; CSV exports escape formulas.

The ≤ 2 s target for a 1 MB / 1,000-column CSV and the comparison with pandas.read_csv are in
bench/bench_uploads.py; here the bounds are generous so that a loaded CI machine passes.
"""
from __future__ import annotations

import csv
import io
import re
import resource
import threading
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from backends.corpora import loaders as ds
from backends.corpora.corpus import Corpus
from backends.corpora.limits import DEFAULT_LIMITS, UploadLimits
from backends.errors import InputError
from backends.settings import Settings

MB = 1024 * 1024


def wide_csv(path, n_cols: int) -> int:
    """n_cols short names, then n_cols values: about 11 bytes a column, like the issue's 65 MB file."""
    with open(path, "wb") as f:
        f.write(b"feature," * (n_cols - 1) + b"feature\n")
        f.write(b"0.1," * (n_cols - 1) + b"0.1\n")
    return path.stat().st_size


def numeric_csv(path, n_rows: int, n_cols: int) -> int:
    x = np.random.default_rng(0).normal(size=(n_rows, n_cols))
    path.write_text(",".join(f"c{j}" for j in range(n_cols)) + "\n"
                    + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    return path.stat().st_size


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KB


def test_six_million_column_csv_is_refused_in_seconds(tmp_path):
    p = tmp_path / "wide.csv"
    size = wide_csv(p, 6_000_000)
    assert size > 60 * MB
    rss0 = max_rss_bytes()
    t0 = time.perf_counter()
    with pytest.raises(InputError) as info:
        ds.load_path(p, max_bytes=200 * MB)
    seconds = time.perf_counter() - t0
    grew = max_rss_bytes() - rss0
    print(f"\n6,000,000-column CSV ({size / MB:.0f} MB): refused in {seconds:.2f} s, peak memory +{grew / MB:.0f} MB: "
          f"{info.value}")
    assert "wide.csv: 6,000,000 columns in its first line, over the limit of 100,000 columns" in str(info.value)
    assert seconds <= 5.0
    assert grew < 1024 * MB  # it grew the server to 8.3 GB before issue #20


def test_one_megabyte_thousand_column_csv_loads(tmp_path):
    p = tmp_path / "thousand.csv"
    size = numeric_csv(p, 104, 1_000)
    t0 = time.perf_counter()
    c = ds.load_path(p, max_bytes=200 * MB)
    seconds = time.perf_counter() - t0
    print(f"\n1,000-column CSV ({size / MB:.2f} MB): loaded in {seconds:.3f} s (target ≤ 2 s in bench/bench_uploads.py)")
    assert c.vectors.shape == (104, 1_000)
    assert c.notes[0] == "vectors from 1000 numeric columns ('c0' … 'c999')"
    np.testing.assert_allclose(c.vectors[0, :3], pd.read_csv(p, nrows=1).to_numpy()[0, :3], rtol=1e-6)
    assert seconds <= 10.0


def test_issue_shaped_wide_mixed_csv_is_bounded(tmp_path):
    """The issue's 203 kB file took 15.7 s: thousands of columns, a few rows, text between the numbers."""
    n = 16_000
    rng = np.random.default_rng(0)
    rows = [",".join(f"t{i}" if j % 2 else f"{rng.normal():.2f}" for j in range(n)) for i in range(3)]
    p = tmp_path / "issue.csv"
    p.write_text(",".join(f"c{j}" for j in range(n)) + "\n" + "\n".join(rows) + "\n")
    t0 = time.perf_counter()
    c = ds.load_path(p, max_bytes=200 * MB)
    seconds = time.perf_counter() - t0
    print(f"\n16,000-column mixed CSV ({p.stat().st_size / 1024:.0f} kB): loaded in {seconds:.2f} s")
    assert c.vectors.shape == (3, 8_000) and len(c.meta.columns) == 1 + DEFAULT_LIMITS.max_meta_columns
    assert any("8,000 metadata columns, over the limit of 1,000" in n for n in c.notes)
    assert seconds <= 20.0


def test_wide_numeric_csv_near_the_column_limit(tmp_path):
    p = tmp_path / "near.csv"
    n = DEFAULT_LIMITS.max_columns
    p.write_text(",".join(["0.5"] * n) + "\n" + ",".join(["1.5"] * n) + "\n")
    t0 = time.perf_counter()
    c = ds.load_path(p, max_bytes=200 * MB)
    assert c.vectors.shape == (2, n)
    assert time.perf_counter() - t0 <= 10.0


# -- every refusal names the limit and the measured value ------------------------------------


def png(color, size=(20, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _csv(tmp_path, rows=20, cols=11):
    p = tmp_path / "t.csv"
    numeric_csv(p, rows, cols)
    return p


def _images_zip(tmp_path, n=3):
    p = tmp_path / "pics.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"{i}.png", png((60 * i, 0, 0)))
        zf.writestr("pad.txt", b"\0" * 100_000)
    return p


def _npy(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(30, 10)))
    return tmp_path / "v.npy"


def _parquet(tmp_path):
    pd.DataFrame(np.random.default_rng(0).normal(size=(30, 12))).rename(columns=str).to_parquet(tmp_path / "v.parquet")
    return tmp_path / "v.parquet"


@pytest.mark.parametrize("make, limits, pattern", [
    (_csv, UploadLimits(max_columns=10), r"t.csv: 11 columns in its first line, over the limit of 10 columns"),
    (_csv, UploadLimits(max_cells=100), r"about 21 lines × 11 columns = 231 cells, over the limit of 100 cells"),
    (_csv, UploadLimits(max_parse_memory=1000), r"about 231 cells would take about [\d.]+ KB of memory, over the "
                                                r"limit of 1000 bytes"),
    (_csv, UploadLimits(max_parse_seconds=1e-9), r"t.csv: reading stopped after \d+ s while .*; the limit is 1e-09 s"),
    (_images_zip, UploadLimits(max_archive_members=3), r"4 entries; at most 3 are accepted"),
    (_images_zip, UploadLimits(archive_expansion=1), r"expands to [\d.]+ KB, over the limit of 50.0 KB \(1× the "
                                                     r"upload limit\)"),
    (_npy, UploadLimits(max_cells=100), r"v.npy: shape \(30, 10\) is 300 values, over the limit of 100 values"),
    (_parquet, UploadLimits(max_cells=100), r"30 rows × 12 columns hold 360 values, over the limit of 100 values"),
    (_parquet, UploadLimits(max_columns=5), r"12 columns, over the limit of 5 columns"),
])
def test_refusals_name_the_limit_and_the_value(tmp_path, make, limits, pattern):
    p = make(tmp_path)
    max_bytes = 50 * 1024 if make is _images_zip else 5 * MB
    assert ds.load_path(p, max_bytes=max_bytes) is not None  # loads under the default limits
    with pytest.raises(InputError, match=pattern):
        ds.load_path(p, max_bytes=max_bytes, limits=limits)


def test_image_pixel_limit_skips_with_a_note(tmp_path):
    p = _images_zip(tmp_path, n=4)
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("big.png", png((0, 0, 255), (400, 300)))  # 0.12 megapixels
    c = ds.load_path(p, max_bytes=5 * MB, limits=UploadLimits(max_image_pixels=100_000))
    assert len(c) == 4
    assert "skipped 1 image(s) over the limit of 0.1 megapixels: big.png (400×300 = 0 megapixels)" in " ".join(c.notes)


def test_limits_reach_nested_loads_and_stay_per_call(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "vectors.tsv").write_text("1\t2\t3\n4\t5\t6\n")
    with pytest.raises(InputError, match="3 columns in its first line, over the limit of 2"):
        ds.load_path(tmp_path / "proj", max_bytes=MB, limits=UploadLimits(max_columns=2))  # folder → load_paths
    assert ds.load_path(tmp_path / "proj", max_bytes=MB).vectors.shape == (2, 3)  # the default again

    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def run(key, limits):
        barrier.wait()
        try:
            results[key] = ds.load_path(tmp_path / "proj", max_bytes=MB, limits=limits)
        except InputError as exc:
            results[key] = exc

    threads = [threading.Thread(target=run, args=("strict", UploadLimits(max_columns=2))),
               threading.Thread(target=run, args=("default", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results["strict"], InputError) and isinstance(results["default"], Corpus)


def test_settings_override_the_limits(monkeypatch):
    assert Settings().upload_limits == DEFAULT_LIMITS
    monkeypatch.setenv("LATENT_ATLAS_MAX_UPLOAD_COLUMNS", "5000")
    monkeypatch.setenv("LATENT_ATLAS_MAX_UPLOAD_CELLS", "1000000")
    monkeypatch.setenv("LATENT_ATLAS_MAX_IMAGE_MEGAPIXELS", "12")
    monkeypatch.setenv("LATENT_ATLAS_UPLOAD_TIMEOUT_S", "30")
    monkeypatch.setenv("LATENT_ATLAS_UPLOAD_MEMORY_MB", "512")
    lim = Settings.from_env().upload_limits
    assert (lim.max_columns, lim.max_cells, lim.max_image_pixels, lim.max_parse_seconds, lim.max_parse_memory) == \
        (5000, 1_000_000, 12_000_000, 30.0, 512 * MB)
    assert Settings.from_env(max_upload_columns=7).upload_limits.max_columns == 7
    with pytest.raises(ValueError, match="max_columns must be a whole number ≥ 1"):
        UploadLimits(max_columns=0)
    with pytest.raises(TypeError, match="limits must be an UploadLimits"):
        ds.load_path("x.npy", max_bytes=MB, limits={"max_columns": 3})


# -- CSV formula injection (issue #20 item 8) ---------------------------------------------------

RISKY = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+SUM(1,2)", "-2+3", "@SUM(A1:A9)", "\tleading tab",
         "\rcarriage", "=1+1"]
SAFE = ["plain", "-1.5", "+3", "1e5", "a=b", ""]
PLAIN_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _corpus_with(texts: list[str]) -> Corpus:
    n = len(texts)
    meta = pd.DataFrame({"id": [f"=id{i}" if i == 0 else f"i{i}" for i in range(n)], "note": texts,
                         "score": np.linspace(-2.5, 2.5, n), "count": np.arange(n) - 3})
    return Corpus(name="demo", vectors=np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32), meta=meta)


def test_export_csv_escapes_formulas_and_keeps_numbers(tmp_path):
    texts = RISKY + SAFE
    c = _corpus_with(texts)
    c.meta = c.meta.rename(columns={"note": "=note"})
    xy = np.column_stack([np.linspace(-1, 1, len(c)), np.linspace(3, -3, len(c))])
    out = ds.export_rows(c, np.arange(len(c)), xy, "csv", tmp_path / "sel.csv")
    back = pd.read_csv(out, keep_default_na=False, dtype={"'=note": str, "id": str})
    assert list(back.columns) == ["id", "'=note", "score", "count", "x", "y"]
    assert back["id"].iloc[0] == "'=id0" and back["id"].iloc[1] == "i1"
    got = back["'=note"].tolist()
    assert got[: len(RISKY)] == ["'" + t for t in RISKY]  # a leading quote: text, not a formula
    assert got[len(RISKY):] == SAFE  # text that reads as a number, or starts harmlessly, is left alone
    # numbers stay numbers, negative ones included
    assert back["score"].dtype == np.float64 and back["count"].dtype == np.int64
    np.testing.assert_allclose(back["score"], c.meta["score"])
    assert back["count"].tolist() == c.meta["count"].tolist()
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), xy)
    with open(out, newline="") as f:  # every cell as a spreadsheet reads it: no formula anywhere
        cells = [cell for row in csv.reader(f) for cell in row]
    assert len(cells) == 6 * (len(c) + 1)
    assert all(not cell.startswith(ds.FORMULA_PREFIXES) or PLAIN_NUMBER.fullmatch(cell) for cell in cells)
    # the other formats keep the values as they are
    for fmt in ("parquet", "jsonl"):
        out = ds.export_rows(c, np.arange(len(c)), xy, fmt, tmp_path / f"sel.{fmt}")
        back = pd.read_parquet(out) if fmt == "parquet" else pd.read_json(out, lines=True, dtype=False)
        assert back["=note"].tolist() == texts


def test_escape_cell_rules():
    for t in RISKY:
        assert ds._escape_cell(t) == "'" + t
    for t in SAFE:
        assert ds._escape_cell(t) == t
    assert ds._escape_cell(-3) == -3 and ds._escape_cell(None) is None and ds._escape_cell(2.5) == 2.5


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    st = None

if st is not None:
    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=30))
    def test_escape_cell_property(s):
        e = ds._escape_cell(s)
        assert e == s or e == "'" + s
        if e == s:  # left alone: harmless in a spreadsheet
            assert not s.startswith(ds.FORMULA_PREFIXES) or PLAIN_NUMBER.fullmatch(s)
        else:
            assert s.startswith(ds.FORMULA_PREFIXES)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                            max_size=12), min_size=2, max_size=6))
    def test_export_csv_round_trip_property(tmp_path_factory, texts):
        c = _corpus_with(texts)
        out = ds.export_rows(c, np.arange(len(c)), np.zeros((len(c), 2)), "csv", tmp_path_factory.mktemp("x") / "s.csv")
        back = pd.read_csv(out, keep_default_na=False, dtype={"note": str, "id": str})["note"].tolist()
        assert [b[1:] if b != t else b for b, t in zip(back, texts)] == texts
        assert all(b == t or (b == "'" + t and t.startswith(ds.FORMULA_PREFIXES)) for b, t in zip(back, texts))
else:
    def test_escape_cell_property():
        pytest.skip("hypothesis is not installed")
