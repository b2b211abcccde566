"""Corpora: the bundled digits, and user uploads (npy, npz, parquet, CSV, Projector TSV, images).

Every loader returns a `Corpus` (backends/corpora/corpus.py). Every problem with a user's file is an
`InputError` whose message names the file and what was wrong; nothing here extracts archives to
disk, unpickles, or reads a file larger than the configured limit.

    load_corpus("digits")                                  # bundled, offline
    load_path("vectors.npy", max_bytes=200 * 2**20)        # one file or a folder
    load_paths(["vectors.tsv", "metadata.tsv"], max_bytes=...)
    export_rows(corpus, indices, xy, "parquet", "selection.parquet")
"""
from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from backends.corpora.corpus import Corpus, register_corpus, validate_vectors
from backends.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
SUPPORTED_FORMATS = (
    ".npy, .npz, .parquet, .csv, the Embedding Projector's vectors.tsv (+ metadata.tsv), "
    "a .zip or folder of images (" + " ".join(IMAGE_EXTENSIONS) + ")"
)
VECTOR_COLUMN_NAMES = ("vector", "vectors", "embedding", "embeddings")
TEXT_COLUMN_NAMES = ("text", "caption", "sentence", "document", "content", "title")
# numeric columns that describe a row rather than being one of its dimensions
NON_DIMENSION_COLUMNS = ("id", "index", "unnamed: 0", "label", "labels", "class", "target")

MAX_ARCHIVE_MEMBERS = 20_000  # files in a zip or folder
ARCHIVE_EXPANSION = 4  # total uncompressed size may be at most this many times max_bytes
MAX_IMAGE_PIXELS = 64_000_000  # larger images are skipped (decompression bombs)
THUMBNAIL_SIZE = 64
EMBED_BATCH = 256
BACKGROUND = (255, 255, 255)  # behind transparent pixels and around letterboxed thumbnails

ImageEmbedder = Callable[[np.ndarray], np.ndarray]


# =========================================================================================
# Bundled corpora


@register_corpus("digits", "scikit-learn handwritten digits: 1,797 images of 8×8 pixels, labels 0–9")
def load_digits_corpus() -> Corpus:
    """scikit-learn handwritten digits: 1,797 images of 8×8 pixels, labels 0–9."""
    import pandas as pd
    from sklearn.datasets import load_digits

    d = load_digits()  # bundled with scikit-learn, no download
    grey = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # (N, 8, 8), 0..16 → 0..255
    big = grey.repeat(4, axis=1).repeat(4, axis=2)  # nearest-neighbour upscale to 32×32
    images = np.ascontiguousarray(np.repeat(big[..., None], 3, axis=-1))
    n = len(images)
    meta = pd.DataFrame({"id": [f"digit-{i:04d}" for i in range(n)], "label": d.target.astype(int)})
    return Corpus(
        name="digits",
        vectors=d.data.astype(np.float32),
        meta=meta,
        images=images,
        description=f"scikit-learn handwritten digits: {n:,} images of 8×8 pixels (64 dims), labels 0–9",
    )


# =========================================================================================
# Public entry points for user data


def load_path(path, *, max_bytes: int, image_embedder: ImageEmbedder | None = None, name: str | None = None) -> Corpus:
    """A user corpus from one file or folder.

    path:           .npy, .npz, .parquet, .csv, vectors.tsv, a .zip of images (or of a
                    vectors.tsv + metadata.tsv pair), or a folder of images / Projector files.
    max_bytes:      the upload limit; a larger file is refused before it is read.
    image_embedder: images uint8 (N, H, W, 3) → vectors (N, D); default `pixel_embedder`. If it
                    has an int attribute `image_size`, it gets letterboxed images of that size,
                    otherwise the 64×64 thumbnails.
    name:           corpus name (default: the file or folder name without extension).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or folder")
    name = name or _default_name(p)
    if p.is_dir():
        return _load_folder(p, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    return load_paths([p], max_bytes=max_bytes, image_embedder=image_embedder, name=name)


def load_paths(paths, *, max_bytes: int, image_embedder: ImageEmbedder | None = None, name: str | None = None) -> Corpus:
    """A user corpus from several uploaded files at once.

    Accepted combinations: one vectors file plus optionally one metadata file (a file whose
    name contains "meta", .tsv or .csv, e.g. vectors.tsv + metadata.tsv, or vectors.npy +
    metadata.csv); or several image files. A single path behaves like `load_path`.
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InputError("no files given; upload one of: " + SUPPORTED_FORMATS)
    if len(paths) == 1 and paths[0].is_dir():
        return load_path(paths[0], max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            raise InputError(f"{p.name}: a folder cannot be combined with other files; give the folder alone")
    sizes = [_check_size(p, max_bytes) for p in paths]
    if len(paths) > 1 and sum(sizes) > max_bytes:
        raise InputError(
            f"the {len(paths)} files together are {_fmt_bytes(sum(sizes))}, over the upload limit of {_fmt_bytes(max_bytes)}"
        )

    # several images: one image corpus
    if len(paths) > 1 and all(p.suffix.lower() in IMAGE_EXTENSIONS for p in paths):
        if len(paths) > MAX_ARCHIVE_MEMBERS:
            raise InputError(f"{len(paths):,} image files; at most {MAX_ARCHIVE_MEMBERS:,} are accepted")
        items = [(p.name, p.read_bytes) for p in paths]
        return _images_corpus(items, source=f"{len(paths)} image files", notes=[], image_embedder=image_embedder,
                              name=name or "images")

    # a lone CSV is read as vectors whatever its name; a lone metadata.tsv is an error below
    meta_paths = [p for p in paths if _looks_like_metadata(p) and (len(paths) > 1 or p.suffix.lower() == ".tsv")]
    vec_paths = [p for p in paths if p not in meta_paths]
    if not vec_paths:
        raise InputError(
            f"{', '.join(p.name for p in meta_paths)}: metadata without vectors; also upload the vectors "
            "(e.g. vectors.tsv next to metadata.tsv)"
        )
    if len(vec_paths) > 1:
        raise InputError(
            f"several vector files given ({', '.join(p.name for p in vec_paths)}); upload one vectors file, "
            "optionally with one metadata file (metadata.tsv or metadata.csv)"
        )
    if len(meta_paths) > 1:
        raise InputError(f"several metadata files given ({', '.join(p.name for p in meta_paths)}); upload at most one")

    vp = vec_paths[0]
    name = name or _default_name(vp)
    parts = _read_vector_file(vp, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    if isinstance(parts, Corpus):  # images
        if meta_paths:
            raise InputError(f"{meta_paths[0].name}: a metadata file cannot be combined with a .zip or images")
        return parts
    if meta_paths:
        mp = meta_paths[0]
        extra = _read_metadata_table(mp.read_bytes(), mp.name, n=len(parts.vectors), vectors_name=vp.name,
                                     notes=parts.notes)
        parts.attach(extra, mp.name)
    return parts.to_corpus(name, source=", ".join(p.name for p in paths))


def pixel_embedder(images: np.ndarray) -> np.ndarray:
    """Downsampled pixels as vectors: uint8 (N, H, W, 3) → float32 (N, 768), 16×16 RGB in [0, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), but are {images.shape}")
    n, h, w, _ = images.shape
    if h % 16 == 0 and w % 16 == 0:
        small = images.reshape(n, 16, h // 16, 16, w // 16, 3).mean(axis=(2, 4), dtype=np.float32)
    else:
        from PIL import Image

        small = np.stack([np.asarray(Image.fromarray(im).resize((16, 16), Image.Resampling.BOX)) for im in images])
    return np.ascontiguousarray((small.astype(np.float32) / 255.0).reshape(n, 16 * 16 * 3))


def export_rows(corpus: Corpus, indices, xy, fmt: str, path) -> str:
    """Write the selected items as rows of id, metadata columns, x, y; return the file path.

    indices: row numbers in the corpus (int, 1-D).
    xy:      (N, 2) coordinates of the whole corpus (indexed by `indices`), or (len(indices), 2)
             coordinates of the selected items in order.
    fmt:     "csv" | "parquet" | "jsonl".
    path:    the output file, or an existing folder to write `<corpus>-selection.<fmt>` into.
    """
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in ("csv", "parquet", "jsonl"):
        raise InputError(f"Unknown export format: {fmt!r}. Must be one of: csv, parquet, jsonl")
    idx = np.asarray(indices)
    if idx.size == 0:
        raise InputError("no items selected; select some points to export")
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or np.all(np.mod(idx, 1) == 0)):
        raise InputError(f"indices must be a 1-D list of row numbers, but are {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    n = len(corpus)
    if idx.min() < 0 or idx.max() >= n:
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise InputError(f"index {bad} is out of range for corpus {corpus.name!r} of {n} items")
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InputError(f"xy must have shape (N, 2), but has shape {xy.shape}")
    if len(xy) == n:
        sel_xy = xy[idx]
    elif len(xy) == len(idx):
        sel_xy = xy
    else:
        raise InputError(f"xy has {len(xy)} rows; expected {n} (the corpus) or {len(idx)} (the selection)")

    df = corpus.meta.iloc[idx].reset_index(drop=True).copy()
    df = df.rename(columns={c: f"{c}_meta" for c in df.columns if c in ("x", "y")})
    df["x"] = sel_xy[:, 0]
    df["y"] = sel_xy[:, 1]

    out = Path(path)
    if out.is_dir():
        out = out / f"{_safe_filename(corpus.name)}-selection.{fmt}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            _parquet_safe(df).to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(out)


# =========================================================================================
# Intermediate result: vectors + metadata before they become a Corpus


class _Parts:
    def __init__(self, vectors: np.ndarray, meta, notes: list[str], texts: list[str] | None = None):
        self.vectors, self.meta, self.notes, self.texts = vectors, meta, notes, texts

    def attach(self, extra, fname: str) -> None:
        """Add columns from a separate metadata file (its columns win on a name clash)."""
        keep = [c for c in self.meta.columns if c not in extra.columns]
        dropped = [c for c in self.meta.columns if c in extra.columns]
        if dropped:
            self.notes.append(f"columns {', '.join(map(repr, dropped))} taken from {fname}")
        extra = extra.reset_index(drop=True)
        self.meta = extra if not keep else self.meta[keep].reset_index(drop=True).join(extra)
        if self.texts is None:
            self.texts = _texts_from(self.meta, self.notes)

    def to_corpus(self, name: str, *, source: str) -> Corpus:
        meta = _finish_meta(self.meta, self.notes)
        n, d = self.vectors.shape
        return Corpus(name=name, vectors=self.vectors, meta=meta, texts=self.texts,
                      description=f"{n:,} vectors × {d:,} dims from {source}", notes=self.notes)


def _read_vector_file(p: Path, *, max_bytes: int, image_embedder, name: str) -> _Parts | Corpus:
    """Dispatch one (size-checked) file on its extension, or on its first bytes when that fails."""
    fname = p.name
    ext = p.suffix.lower()
    with open(p, "rb") as f:
        head = f.read(8)
    kind = _kind(ext, head)
    if kind is None:
        if ext in IMAGE_EXTENSIONS:
            raise InputError(f"{fname}: a single image; upload several images, or a .zip or folder of images")
        raise InputError(f"{fname}: unsupported file type {ext or '(no extension)'!r}; supported: {SUPPORTED_FORMATS}")
    notes: list[str] = []
    if kind == "zip":
        return _load_zip(p, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    data = p.read_bytes()
    try:
        if kind == "npy":
            vectors = _vectors_from_npy(data, fname)
            return _Parts(vectors, _empty_meta(len(vectors)), notes)
        if kind == "npz":
            return _parts_from_npz(data, fname, max_bytes=max_bytes)
        if kind == "parquet":
            return _parts_from_table(_read_parquet(data, fname, max_bytes=max_bytes), fname, notes, csv=False)
        if kind == "csv":
            df, first_line = _read_csv(data, fname, notes)
            return _parts_from_table(df, fname, notes, csv=True, first_line=first_line)
        if kind == "tsv":
            vectors = _vectors_from_tsv(data, fname)
            return _Parts(vectors, _empty_meta(len(vectors)), notes)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{fname}: too large to load in memory") from None
    except Exception as exc:  # a parser's own error on a malformed file: report it, never crash
        raise InputError(f"{fname}: could not read as {kind} ({type(exc).__name__}: {_short(exc)})") from exc
    raise AssertionError(kind)


def _kind(ext: str, head: bytes) -> str | None:
    by_ext = {".npy": "npy", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
              ".tsv": "tsv", ".zip": "zip"}
    if ext in by_ext:
        return by_ext[ext]
    # unknown or missing extension: look at the content
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    return None


# =========================================================================================
# Formats


def _vectors_from_npy(data: bytes, fname: str) -> np.ndarray:
    if not data.startswith((b"\x93NUMPY", b"PK\x03\x04", b"\x80")):  # \x80: a raw pickle (protocol ≥ 2)
        raise InputError(f"{fname}: not a valid .npy file (it does not start with the .npy header); "
                         "save it with np.save")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InputError(
                f"{fname} contains Python objects (pickle), which are never loaded; save a numeric array "
                "instead, e.g. np.save(path, np.asarray(vectors, dtype=np.float32))"
            ) from None
        raise InputError(f"{fname}: not a valid .npy file ({_short(exc)})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{fname}: not a valid .npy file ({_short(exc)})") from None
    if isinstance(arr, np.lib.npyio.NpzFile):
        arr.close()
        raise InputError(f"{fname}: this is an .npz archive, not an .npy array; rename it to .npz")
    return _numeric_2d(arr, fname)


def _numeric_2d(arr: np.ndarray, fname: str) -> np.ndarray:
    if arr.dtype.names:
        raise InputError(
            f"{fname}: a structured array with fields {', '.join(arr.dtype.names)}; save a plain numeric "
            "2-D array (rows × dimensions)"
        )
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{fname}: holds complex numbers; save real numbers (rows × dimensions)")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{fname}: holds {arr.dtype} values, not numbers; save a numeric 2-D array (rows × dimensions)")
    if arr.ndim != 2:
        hint = " (one row per item, one column per dimension)"
        if arr.ndim > 2:
            hint += f"; reshape it, e.g. x.reshape({arr.shape[0]}, -1)"
        raise InputError(f"{fname}: expected a 2-D array of vectors, got {arr.ndim}-D shape {arr.shape}{hint}")
    return validate_vectors(arr, what=fname)


def _parts_from_npz(data: bytes, fname: str, *, max_bytes: int) -> _Parts:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        _check_archive(zf, fname, max_bytes=max_bytes)
    notes: list[str] = []
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        keys = list(z.files)
        arrays = {}
        for k in keys:
            try:
                arrays[k] = z[k]
            except ValueError:
                notes.append(f"skipped array {k!r} in {fname}: it holds Python objects (pickle)")
    chosen = next((k for k, a in arrays.items()
                   if a.ndim == 2 and not a.dtype.names and (np.issubdtype(a.dtype, np.number) or a.dtype == bool)
                   and not np.issubdtype(a.dtype, np.complexfloating)), None)
    if chosen is None:
        shapes = ", ".join(f"{k} {a.dtype} {a.shape}" for k, a in arrays.items()) or "none readable"
        raise InputError(f"{fname}: no numeric 2-D array among its arrays ({shapes})")
    vectors = _numeric_2d(arrays[chosen], fname)
    import pandas as pd

    meta = pd.DataFrame(index=range(len(vectors)))
    for k, a in arrays.items():
        if k != chosen and a.ndim == 1 and len(a) == len(vectors) and not a.dtype.names:
            meta[k] = a
    notes.insert(0, f"vectors from array {chosen!r} of {fname}"
                 + (f"; metadata from {', '.join(map(repr, meta.columns))}" if len(meta.columns) else ""))
    return _Parts(vectors, meta, notes)


def _read_parquet(data: bytes, fname: str, *, max_bytes: int):
    import pyarrow.parquet as pq

    md = pq.ParquetFile(io.BytesIO(data)).metadata
    expanded = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    if expanded > ARCHIVE_EXPANSION * max_bytes:
        raise InputError(
            f"{fname}: expands to {_fmt_bytes(expanded)} when decompressed, over the limit of "
            f"{_fmt_bytes(ARCHIVE_EXPANSION * max_bytes)}"
        )
    return pq.read_table(io.BytesIO(data)).to_pandas()


def _read_csv(data: bytes, fname: str, notes: list[str]):
    """Returns (table, the file's line number of row 0)."""
    import pandas as pd

    sep = ","
    df = pd.read_csv(io.BytesIO(data), encoding_errors="replace")
    if len(df.columns) == 1:  # maybe another delimiter (spreadsheets in some locales write ';')
        header = str(df.columns[0])
        other = next((d for d in (";", "\t", "|") if d in header), None)
        if other:
            sep = other
            df = pd.read_csv(io.BytesIO(data), sep=sep, encoding_errors="replace")
            notes.append(f"{fname}: columns separated by {sep!r}, not commas")
    if len(df.columns) and all(_is_number(str(c)) for c in df.columns):
        df = pd.read_csv(io.BytesIO(data), sep=sep, header=None, encoding_errors="replace")
        df.columns = [f"d{i}" for i in range(len(df.columns))]
        notes.append(f"{fname} has no header row: all {len(df.columns)} columns read as values")
        return df, 1
    return df, 2


def _parts_from_table(df, fname: str, notes: list[str], *, csv: bool, first_line: int = 2) -> _Parts:
    """Vectors from a vector column, or from all numeric columns; the rest is metadata."""
    import pandas as pd

    if len(df.columns) == 0:
        raise InputError(f"{fname}: no columns")
    if len(df) == 0:
        raise InputError(f"{fname}: no rows (only a header)")
    row_name = (lambda i: f"line {i + first_line}") if csv else (lambda i: f"row {i}")
    lower = {str(c).lower(): c for c in df.columns}

    vec_col = next((lower[n] for n in VECTOR_COLUMN_NAMES if n in lower), None)
    if vec_col is None:
        list_cols = [c for c in df.columns if _is_list_column(df[c], csv=csv)]
        if list_cols:
            vec_col = list_cols[0]
            if len(list_cols) > 1:
                notes.append(f"several list columns ({', '.join(map(repr, list_cols))}); used the first. "
                             "Name the vector column 'vector' or 'embedding' to choose")

    if vec_col is not None:
        vectors = _vectors_from_column(df[vec_col], fname, vec_col, row_name)
        meta = df.drop(columns=[vec_col])
        notes.insert(0, f"vectors from column {vec_col!r} ({vectors.shape[1]} dims)")
    else:
        numeric, kept = [], []
        for c in df.columns:
            col = df[c]
            if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
                if csv:
                    _check_mostly_numeric(col, fname, c, row_name)
                continue
            if str(c).lower() in NON_DIMENSION_COLUMNS:
                kept.append(c)
                continue
            numeric.append(c)
        if not numeric:
            raise InputError(
                f"{fname}: found no vectors: no column named {' / '.join(VECTOR_COLUMN_NAMES)}, no column of lists, "
                f"and no numeric columns; columns are: {', '.join(map(str, df.columns[:20]))}"
            )
        vectors = validate_vectors(df[numeric].to_numpy(dtype=np.float64), what=fname)
        meta = df.drop(columns=numeric)
        shown = f"{numeric[0]!r} … {numeric[-1]!r}" if len(numeric) > 3 else ", ".join(map(repr, numeric))
        notes.insert(0, f"vectors from {len(numeric)} numeric columns ({shown})")
        if kept:
            notes.append(f"numeric column(s) {', '.join(map(repr, kept))} kept as metadata, not as dimensions")
    if len(meta.columns):
        notes.append(f"metadata columns: {', '.join(map(str, meta.columns))}")
    meta = _sanitize_meta(meta.reset_index(drop=True))
    return _Parts(vectors, meta, notes, texts=_texts_from(meta, notes))


def _is_list_column(col, *, csv: bool) -> bool:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return False
    first = col.dropna()
    if first.empty:
        return False
    v = first.iloc[0]
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    if csv and isinstance(v, str):
        s = v.strip()
        return len(s) >= 2 and s[0] == "[" and s[-1] == "]" and _parse_number_list(s) is not None
    return False


def _parse_number_list(s: str) -> list[float] | None:
    body = s.strip()
    if body[:1] in "[(" and body[-1:] in "])":
        body = body[1:-1]
    try:
        return [float(t) for t in body.replace(",", " ").split()]
    except ValueError:
        return None


def _vectors_from_column(col, fname: str, cname, row_name) -> np.ndarray:
    rows = []
    d = None
    for i, v in enumerate(col.tolist()):
        if isinstance(v, str):
            vals = _parse_number_list(v)
            if vals is None:
                raise InputError(f"{fname}: column {cname!r}, {row_name(i)}: could not read {v[:40]!r} as numbers")
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            raise InputError(f"{fname}: column {cname!r}, {row_name(i)} is empty")
        else:
            try:
                vals = np.asarray(v, dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise InputError(f"{fname}: column {cname!r}, {row_name(i)}: could not read {str(v)[:40]!r} as numbers") from None
        if d is None:
            d = len(vals)
        elif len(vals) != d:
            raise InputError(
                f"{fname}: column {cname!r}, {row_name(i)} has {len(vals)} values but the first row has {d}; "
                "every vector needs the same number of dimensions"
            )
        rows.append(vals)
    return validate_vectors(np.asarray(rows, dtype=np.float64), what=fname)


def _check_mostly_numeric(col, fname: str, cname, row_name) -> None:
    """A CSV column of numbers with a few typos: say where, instead of silently dropping a dimension."""
    import pandas as pd

    s = col.dropna()
    if s.empty:
        return
    coerced = pd.to_numeric(s, errors="coerce")
    ok = int(coerced.notna().sum())
    if ok < len(s) and ok >= 0.9 * len(s) and ok >= 2:
        bad_pos = coerced.index[coerced.isna()][0]
        i = int(col.index.get_loc(bad_pos))
        raise InputError(f"{fname}: column {cname!r}, {row_name(i)}: {str(col.loc[bad_pos])[:40]!r} is not a number")


_NUMBER_RE = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(nan|inf|infinity)\s*$", re.I)


def _is_number(s: str) -> bool:
    return bool(_NUMBER_RE.match(s))


# -- TensorFlow Embedding Projector ------------------------------------------------------


def _vectors_from_tsv(data: bytes, fname: str) -> np.ndarray:
    """vectors.tsv: tab-separated floats, one vector per line, no header."""
    import pandas as pd

    if not data.strip():
        raise InputError(f"{fname} is empty")
    arr = None
    try:  # fast path: the C parser
        arr = pd.read_csv(io.BytesIO(data.rstrip(b"\r\n")), sep="\t", header=None, dtype=np.float64, quoting=3,
                          skip_blank_lines=False).to_numpy()
    except Exception:
        pass
    if arr is None or not np.isfinite(arr).all():
        _diagnose_tsv(data, fname)  # raises with a line number when there is a problem to name
    if arr is None:
        raise InputError(f"{fname}: could not read as tab-separated numbers")
    return validate_vectors(arr, what=fname)


def _diagnose_tsv(data: bytes, fname: str) -> None:
    lines = data.decode("utf-8", errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    d = None
    for i, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            raise InputError(f"{fname}: line {i} is empty")
        fields = line.split("\t")
        if d is None:
            d = len(fields)
        elif len(fields) != d:
            raise InputError(
                f"{fname}: line {i} has {len(fields)} values but line 1 has {d}; every vector needs the same "
                "number of tab-separated values"
            )
        for j, f in enumerate(fields, start=1):
            try:
                v = float(f)
            except ValueError:
                hint = " (vectors.tsv has no header row)" if i == 1 else ""
                raise InputError(f"{fname}: line {i}, column {j}: {f[:40]!r} is not a number{hint}") from None
            if not np.isfinite(v):
                raise InputError(f"{fname}: line {i}, column {j} is {f.strip()!r}; vectors must be finite")


def _read_metadata_table(data: bytes, fname: str, *, n: int, vectors_name: str, notes: list[str]):
    """metadata.tsv (Projector rules: a header only when there is more than one column) or metadata.csv."""
    import pandas as pd

    if not data.strip():
        raise InputError(f"{fname} is empty")
    if fname.lower().endswith(".csv"):
        try:
            df = pd.read_csv(io.BytesIO(data), encoding_errors="replace")
        except Exception as exc:
            raise InputError(f"{fname}: could not read as CSV ({_short(exc)})") from None
        rows = len(df)
    else:
        lines = data.decode("utf-8", errors="replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
        lines = [ln.rstrip("\r") for ln in lines]
        ncols = lines[0].count("\t") + 1
        if ncols == 1:
            header, body = ["label"], lines
            if len(lines) == n + 1:  # a header the Projector would not expect; tolerate it
                header, body = [lines[0].strip() or "label"], lines[1:]
                notes.append(f"{fname}: first line {lines[0]!r} read as a header")
        else:
            header, body = lines[0].split("\t"), lines[1:]
        for i, ln in enumerate(body, start=len(lines) - len(body) + 1):
            if ln.count("\t") + 1 != ncols:
                raise InputError(f"{fname}: line {i} has {ln.count(chr(9)) + 1} columns but the header has {ncols}")
        header = _unique_names([h.strip() or f"column{j}" for j, h in enumerate(header)])
        df = pd.DataFrame([ln.split("\t") for ln in body], columns=header, dtype=str) if body else pd.DataFrame(columns=header)
        for c in df.columns:
            num = pd.to_numeric(df[c], errors="coerce")
            if num.notna().all() and len(df):
                df[c] = num
        rows = len(df)
    if rows != n:
        extra = " (not counting its header line)" if not fname.lower().endswith(".csv") and len(df.columns) > 1 else ""
        raise InputError(f"{fname} has {rows} rows{extra} but {vectors_name} has {n} vectors; they must match line for line")
    notes.append(f"metadata from {fname}: {', '.join(map(str, df.columns))}")
    return _sanitize_meta(df)


# -- images ----------------------------------------------------------------------------


def _load_zip(p: Path, *, max_bytes: int, image_embedder, name: str):
    fname = p.name
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{fname}: not a valid zip file ({_short(exc)})") from None
    with zf:
        infos = _check_archive(zf, fname, max_bytes=max_bytes)
        files = [i for i in infos if not i.is_dir()]
        has_images = any(Path(i.filename).suffix.lower() in IMAGE_EXTENSIONS for i in files)
        tsvs = [i for i in files if i.filename.lower().endswith(".tsv") and not _hidden(i.filename)]
        if not has_images and tsvs:  # a zipped Projector export
            vec = [i for i in tsvs if not _looks_like_metadata(Path(i.filename))]
            meta = [i for i in tsvs if _looks_like_metadata(Path(i.filename))]
            if len(vec) != 1 or len(meta) > 1:
                raise InputError(f"{fname}: expected one vectors .tsv and at most one metadata .tsv, found "
                                 f"{', '.join(i.filename for i in tsvs)}")
            notes: list[str] = []
            try:
                vectors = _vectors_from_tsv(zf.read(vec[0]), f"{fname}:{vec[0].filename}")
                parts = _Parts(vectors, _empty_meta(len(vectors)), notes)
                if meta:
                    mname = f"{fname}:{meta[0].filename}"
                    parts.attach(_read_metadata_table(zf.read(meta[0]), mname, n=len(vectors),
                                                      vectors_name=vec[0].filename, notes=notes), mname)
            except (zipfile.BadZipFile, RuntimeError, EOFError, OSError) as exc:
                raise InputError(f"{fname}: could not read ({_short(exc)})") from None
            return parts.to_corpus(name, source=fname)
        items = [(i.filename, (lambda i=i: zf.read(i))) for i in files]
        return _images_corpus(items, source=fname, notes=[], image_embedder=image_embedder, name=name)


def _check_archive(zf: zipfile.ZipFile, fname: str, *, max_bytes: int) -> list[zipfile.ZipInfo]:
    """Reject zip-slip names and zip bombs before reading anything."""
    infos = zf.infolist()
    for info in infos:
        if _unsafe_member(info.filename):
            raise InputError(
                f"{fname}: rejected: entry {info.filename!r} has an absolute path or '..' in its name "
                "(a zip-slip attempt); nothing was read"
            )
    files = [i for i in infos if not i.is_dir()]
    if len(files) > MAX_ARCHIVE_MEMBERS:
        raise InputError(f"{fname}: {len(files):,} entries; at most {MAX_ARCHIVE_MEMBERS:,} are accepted")
    total = sum(i.file_size for i in files)
    limit = ARCHIVE_EXPANSION * max_bytes
    if total > limit:
        raise InputError(f"{fname}: expands to {_fmt_bytes(total)}, over the limit of {_fmt_bytes(limit)} "
                         f"({ARCHIVE_EXPANSION}× the upload limit)")
    return infos


def _unsafe_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[\\/]", name)


def _load_folder(p: Path, *, max_bytes: int, image_embedder, name: str) -> Corpus:
    files: list[Path] = []
    for root, dirs, fnames in os.walk(p, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(fnames):
            if not f.startswith("."):
                fp = Path(root) / f
                if fp.is_file() and not fp.is_symlink():
                    files.append(fp)
                    if len(files) > MAX_ARCHIVE_MEMBERS:
                        raise InputError(f"{p.name}: more than {MAX_ARCHIVE_MEMBERS:,} files; at most that many are accepted")
    if not files:
        raise InputError(f"{p.name}: the folder is empty")
    tsvs = [f for f in files if f.suffix.lower() == ".tsv" and f.parent == p]
    if tsvs and not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
        return load_paths(tsvs, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
    total = sum(f.stat().st_size for f in images)
    limit = ARCHIVE_EXPANSION * max_bytes
    if total > limit:
        raise InputError(f"{p.name}: its images total {_fmt_bytes(total)}, over the limit of {_fmt_bytes(limit)}")
    items = [(str(f.relative_to(p)), f.read_bytes) for f in files]
    return _images_corpus(items, source=p.name, notes=[], image_embedder=image_embedder, name=name)


def _images_corpus(items: Iterable[tuple[str, Callable[[], bytes]]], *, source: str, notes: list[str],
                   image_embedder: ImageEmbedder | None, name: str) -> Corpus:
    """Decode images one by one (skipping what is not an image), thumbnail, embed in batches."""
    import pandas as pd

    embed = image_embedder or pixel_embedder
    embed_size = getattr(image_embedder, "image_size", None) if image_embedder is not None else None
    embed_size = int(embed_size) if isinstance(embed_size, (int, np.integer)) and embed_size > 0 else None

    non_images: list[str] = []
    undecodable: list[str] = []
    rows: list[dict] = []
    thumbs: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            vectors.append(_embed(embed, np.stack(batch)))
            batch.clear()

    for relname, read in items:
        if _hidden(relname):
            continue
        if Path(relname).suffix.lower() not in IMAGE_EXTENSIONS:
            non_images.append(relname)
            continue
        try:
            data = read()
        except Exception as exc:  # a corrupt member (bad CRC, encrypted, unsupported compression)
            undecodable.append(f"{relname} (could not read: {_short(exc, 80)})")
            continue
        try:
            im, (w, h) = _decode_image(data)
        except _Skip as exc:
            undecodable.append(f"{relname} ({exc})")
            continue
        thumb = _letterbox(im, THUMBNAIL_SIZE)
        thumbs.append(thumb)
        batch.append(thumb if embed_size is None else _letterbox(im, embed_size))
        rows.append({"filename": relname, "width": w, "height": h})
        if len(batch) >= EMBED_BATCH:
            flush()
    flush()

    if non_images:
        notes.append(f"skipped {len(non_images)} non-image file(s): {_listing(non_images)}")
    if undecodable:
        notes.append(f"skipped {len(undecodable)} image(s) that could not be decoded: {_listing(undecodable)}")
    if not rows:
        skipped = f"; skipped: {'; '.join(notes)}" if notes else ""
        raise InputError(f"{source}: no readable images ({', '.join(IMAGE_EXTENSIONS)}){skipped}")
    if len(rows) == 1:
        raise InputError(f"{source}: only 1 readable image; at least 2 are needed to build a map"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    meta = pd.DataFrame(rows)
    meta.insert(0, "id", _unique_names([Path(r["filename"]).stem or "image" for r in rows]))
    vecs = validate_vectors(np.concatenate(vectors), what=f"{source} (image vectors)")
    encoder = getattr(image_embedder, "__self__", None)  # a bound encode_images: its encoder
    enc_name = getattr(encoder, "name", None)
    how = (f"image encoder {enc_name}" if enc_name else "image encoder") if image_embedder is not None \
        else "16×16 downsampled pixels (no image encoder active)"
    text_query = None
    if encoder is not None and hasattr(encoder, "encode_texts"):  # search by meaning in the same space
        def text_query(text: str) -> np.ndarray:
            return np.asarray(encoder.encode_texts([text]), np.float32)[0]
    return Corpus(name=name, vectors=vecs, meta=meta, images=np.stack(thumbs),
                  description=f"{len(rows):,} images from {source}, vectors from {how}", notes=notes,
                  text_query=text_query)


class _Skip(Exception):
    pass


def _decode_image(data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise _Skip(f"{w}×{h} pixels is too large")
        if im.format == "JPEG":
            im.draft("RGB", (max(THUMBNAIL_SIZE, 256), max(THUMBNAIL_SIZE, 256)))
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
            im = Image.alpha_composite(bg, rgba).convert("RGB")
        else:
            im = im.convert("RGB")
    except _Skip:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _Skip(_short(exc) or type(exc).__name__) from None
    return im, (w, h)


def _letterbox(im, size: int) -> np.ndarray:
    from PIL import Image, ImageOps

    fitted = ImageOps.contain(im, (size, size), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    canvas.paste(fitted, ((size - fitted.width) // 2, (size - fitted.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def _embed(embed: ImageEmbedder, images: np.ndarray) -> np.ndarray:
    out = np.asarray(embed(images))
    if out.ndim != 2 or len(out) != len(images):
        raise ValueError(f"image embedder returned shape {out.shape} for {len(images)} images; expected (N, D)")
    return out.astype(np.float32, copy=False)


# =========================================================================================
# Small helpers


def _check_size(p: Path, max_bytes: int) -> int:
    size = os.path.getsize(p)
    if size == 0:
        raise InputError(f"{p.name} is empty")
    if size > max_bytes:
        raise InputError(f"{p.name} is {_fmt_bytes(size)}, over the upload limit of {_fmt_bytes(max_bytes)}")
    return size


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _default_name(p: Path) -> str:
    stem = p.name
    for ext in (".tar.gz", ".parquet", ".npy", ".npz", ".csv", ".tsv", ".zip", ".pq"):
        if stem.lower().endswith(ext):
            return stem[: -len(ext)] or stem
    return p.stem or p.name


def _looks_like_metadata(p: Path) -> bool:
    return "meta" in p.stem.lower() and p.suffix.lower() in (".tsv", ".csv")


def _hidden(relname: str) -> bool:
    parts = re.split(r"[\\/]", relname)
    return any(part.startswith(".") for part in parts if part) or parts[0] == "__MACOSX"


def _empty_meta(n: int):
    import pandas as pd

    return pd.DataFrame(index=range(n))


def _finish_meta(meta, notes: list[str]):
    """Use an "id" column when it is present and unique; otherwise keep it as "source_id"."""
    if "id" in meta.columns:
        ids = meta["id"]
        if ids.isna().any() or ids.astype(str).duplicated().any():
            dup = ids[ids.astype(str).duplicated()]
            why = f"{str(dup.iloc[0])!r} appears more than once" if len(dup) else "some rows have no id"
            notes.append(f"column 'id' not used as id ({why}); kept as 'source_id', rows numbered instead")
            meta = meta.rename(columns={"id": "source_id"})
        else:
            meta = meta[["id"] + [c for c in meta.columns if c != "id"]]
    return meta.copy()


def _sanitize_meta(meta):
    """Column names as strings; cells that are lists, dicts or bytes become text."""
    import pandas as pd

    meta = meta.copy()
    meta.columns = _unique_names([str(c) for c in meta.columns])
    for c in meta.columns:
        col = meta[c]
        if pd.api.types.is_object_dtype(col):
            if col.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray, bytes))).any():
                meta[c] = col.map(lambda v: v if v is None or isinstance(v, str) else str(v))
    return meta


def _texts_from(meta, notes: list[str]) -> list[str] | None:
    lower = {str(c).lower(): c for c in meta.columns}
    col = next((lower[n] for n in TEXT_COLUMN_NAMES if n in lower), None)
    if col is None:
        return None
    notes.append(f"hover text from column {col!r}")
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in meta[col].tolist()]


def _parquet_safe(df):
    """Object columns with mixed types become strings, so pyarrow can write them."""
    import pandas as pd

    df = df.copy()
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_object_dtype(col):
            kinds = {type(v) for v in col if v is not None and not (isinstance(v, float) and np.isnan(v))}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
                df[c] = col.map(lambda v: None if v is None else str(v))
    return df


def _unique_names(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        cand, k = n, 2
        while cand in seen:
            cand, k = f"{n}-{k}", k + 1
        seen.add(cand)
        out.append(cand)
    return out


def _listing(items: list[str], shown: int = 10) -> str:
    return ", ".join(items[:shown]) + (f", … ({len(items) - shown} more)" if len(items) > shown else "")


def _safe_filename(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("._") or "corpus"


def _short(exc: BaseException, limit: int = 200) -> str:
    s = str(exc).strip().replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 1] + "…"
