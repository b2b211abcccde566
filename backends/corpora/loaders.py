"""Corpora: the bundled digits, and user uploads (npy, npz, parquet, CSV, Projector TSV, images).

Every loader returns a `Corpus` (backends/corpora/corpus.py). Every problem with a user's file is an
`InputError` whose message names the file and what was wrong; nothing here extracts archives to
disk, unpickles, or reads a file larger than the configured limit. Before a parser runs, cheap checks
on the raw bytes refuse what would stall it (backends/corpora/limits.py: columns, cells, decompressed
size, image pixels), and reading a table stops after a time limit; each message names the limit.

    load_corpus("digits")                                  # bundled, offline
    load_path("vectors.npy", max_bytes=200 * 2**20)        # one file or a folder
    load_paths(["vectors.tsv", "metadata.tsv"], max_bytes=..., limits=settings.upload_limits)
    load_path("wine.csv", max_bytes=..., scaling="auto")   # numeric columns z-scored when scales differ > 10×
    export_rows(corpus, indices, xy, "parquet", "selection.parquet")
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import os
import re
import struct
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from backends.corpora.corpus import Corpus, register_corpus, validate_vectors
from backends.corpora.ingested import is_ingest_folder, load_ingest
from backends.corpora.limits import DEFAULT_LIMITS, UploadLimits
from backends.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
ARCHIVE_EXTENSIONS = (".zip", ".npz", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
SUPPORTED_FORMATS = (
    ".npy, .npz, .parquet, .csv, the Embedding Projector's vectors.tsv (+ metadata.tsv), "
    "a .zip or folder of images (" + " ".join(IMAGE_EXTENSIONS) + ")"
)
OFFICE_EXTENSIONS = {e: "a spreadsheet: save it as CSV" for e in (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")}
VECTOR_COLUMN_NAMES = ("vector", "vectors", "embedding", "embeddings")
TEXT_COLUMN_NAMES = ("text", "caption", "sentence", "document", "content", "title")
# numeric columns that describe a row rather than being one of its dimensions
NON_DIMENSION_COLUMNS = ("id", "index", "unnamed: 0", "label", "labels", "class", "target")

THUMBNAIL_SIZE = 64
EMBED_BATCH = 256
BACKGROUND = (255, 255, 255)  # behind transparent pixels and around letterboxed thumbnails
LIST_SAMPLE_ROWS = 64  # rows looked at to tell list / mostly-numeric text columns (issue #20: vectorised)
# CSV cells that a spreadsheet would run as a formula (OWASP "CSV injection"); exports prefix a quote
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# How vectors made of separate numeric columns (a table's features) are scaled (issue #19 item 4):
# "auto" z-scores them when the columns' standard deviations differ by more than AUTO_SCALE_RATIO×.
SCALINGS = ("auto", "z-score", "robust", "none")
AUTO_SCALE_RATIO = 10.0

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


def load_path(path, *, max_bytes: int, image_embedder: ImageEmbedder | None = None, name: str | None = None,
              limits: UploadLimits | None = None, scaling: str = "auto") -> Corpus:
    """A user corpus from one file or folder.

    path:           .npy, .npz, .parquet, .csv, vectors.tsv, a .zip of images (or of a
                    vectors.tsv + metadata.tsv pair), a folder of images / Projector files, or
                    an ingest's OUT folder (manifest.json + shards/: backends/corpora/ingested.py).
    max_bytes:      the upload limit; a larger file is refused before it is read (an ingest's
                    folder is not an upload: the memory budget decides whether it opens).
    image_embedder: images uint8 (N, H, W, 3) → vectors (N, D); default `pixel_embedder`. If it
                    has an int attribute `image_size`, it gets letterboxed images of that size,
                    otherwise the 64×64 thumbnails.
    name:           corpus name (default: the file or folder name without extension).
    limits:         columns, cells, pixels, time… (default `UploadLimits()`; the app passes
                    `settings.upload_limits`).
    scaling:        for a table whose vectors are its separate numeric columns (CSV, Parquet):
                    "auto" (z-score when the columns' standard deviations differ by more than
                    10×, else none), "z-score", "robust" ((x − median) / IQR) or "none". Vector
                    and list columns, .npy/.npz arrays and Projector TSVs are never scaled. What
                    was applied is said in the corpus notes.

    Raises InputError, and nothing else, for any problem with the file.
    """
    scaling = check_scaling(scaling)
    with _loading(limits, path):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path}: no such file or folder")
        name = name or _default_name(p)
        if p.is_dir() and is_ingest_folder(p):  # `python -m backends.ingest`'s OUT: its shards, map and index
            return load_ingest(p, name=name)
        if p.is_dir():
            return _load_folder(p, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
        return load_paths([p], max_bytes=max_bytes, image_embedder=image_embedder, name=name, scaling=scaling)


def load_paths(paths, *, max_bytes: int, image_embedder: ImageEmbedder | None = None, name: str | None = None,
               limits: UploadLimits | None = None, scaling: str = "auto") -> Corpus:
    """A user corpus from several uploaded files at once.

    Accepted combinations: one vectors file plus optionally one metadata file (a file whose
    name contains "meta", .tsv or .csv, e.g. vectors.tsv + metadata.tsv, or vectors.npy +
    metadata.csv); or several image files. A single path behaves like `load_path`.
    """
    scaling = check_scaling(scaling)
    with _loading(limits, paths):
        return _load_paths(paths, max_bytes=max_bytes, image_embedder=image_embedder, name=name, scaling=scaling)


def _load_paths(paths, *, max_bytes: int, image_embedder: ImageEmbedder | None, name: str | None,
                scaling: str = "auto") -> Corpus:
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise InputError("no files given; upload one of: " + SUPPORTED_FORMATS)
    if len(paths) == 1 and paths[0].is_dir():
        return load_path(paths[0], max_bytes=max_bytes, image_embedder=image_embedder, name=name, scaling=scaling)
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
        most = _limits().max_archive_members
        if len(paths) > most:
            raise InputError(f"{len(paths):,} image files; at most {most:,} are accepted")
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
    if parts.from_columns:
        parts.scale(scaling)
    if meta_paths:
        mp = meta_paths[0]
        extra = _read_metadata_table(mp.read_bytes(), mp.name, n=len(parts.vectors), vectors_name=vp.name,
                                     notes=parts.notes)
        parts.attach(extra, mp.name)
    return parts.to_corpus(name, source=", ".join(p.name for p in paths))


# -- the limits and clock of one load call --------------------------------------------------


class _Load:
    def __init__(self, limits: UploadLimits):
        self.limits = limits
        self.t0 = time.monotonic()


_ACTIVE: contextvars.ContextVar[_Load | None] = contextvars.ContextVar("latent_atlas_upload", default=None)


def _limits() -> UploadLimits:
    cur = _ACTIVE.get()
    return cur.limits if cur is not None else DEFAULT_LIMITS


def _check_time(fname: str, doing: str) -> None:
    """Stop a load that has run past the time limit, naming what it was doing."""
    cur = _ACTIVE.get()
    if cur is None:
        return
    spent = time.monotonic() - cur.t0
    if spent > cur.limits.max_parse_seconds:
        raise InputError(f"{fname}: reading stopped after {spent:.0f} s while {doing}; the limit is "
                         f"{cur.limits.max_parse_seconds:g} s per upload")


@contextlib.contextmanager
def _loading(limits: UploadLimits | None, what):
    """Run one public load: set its limits and clock (an inner call keeps the outer's), and turn any
    error that is not an InputError into one, so that a bad file never escapes as anything else."""
    if limits is not None and not isinstance(limits, UploadLimits):
        raise TypeError(f"limits must be an UploadLimits, but is {type(limits).__name__}")
    outer = _ACTIVE.get()
    token = _ACTIVE.set(_Load(limits or DEFAULT_LIMITS)) if outer is None or limits is not None else None
    try:
        yield
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{_what(what)}: too large to load in memory") from None
    except RecursionError:
        raise InputError(f"{_what(what)}: too deeply nested to read") from None
    except Exception as exc:  # a parser's or the file system's own error: report it, never crash
        raise InputError(f"{_what(what)}: could not be read ({type(exc).__name__}: {_short(exc)})") from exc
    finally:
        if token is not None:
            _ACTIVE.reset(token)


def _what(what) -> str:
    if isinstance(what, (str, os.PathLike)):
        return Path(what).name or str(what)
    try:
        return ", ".join(Path(p).name for p in what) or "upload"
    except TypeError:
        return "upload"


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

    In a CSV, text cells (and column names) that a spreadsheet would run as a formula (starting
    with = + - @, a tab or a carriage return) get a leading single quote; numbers stay numbers.
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
            # CRLF line ends (RFC 4180): a cell holding a lone \r is then quoted, not split into two rows
            _escape_formulas(df).to_csv(tmp, index=False, lineterminator="\r\n")
        elif fmt == "jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            _parquet_safe(df).to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(out)


def _escape_formulas(df):
    """Cells and column names that start like a formula get a leading "'" (OWASP, CSV injection).

    Only text is touched: numeric columns, and text that reads as a plain number ("-1.5", "+3"),
    stay as they are, so numbers round-trip as numbers.
    """
    import pandas as pd

    out = df.copy()
    out.columns = [_escape_cell(c) if isinstance(c, str) else c for c in out.columns]
    for j, dt in enumerate(out.dtypes):
        if pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt) or \
                pd.api.types.is_datetime64_any_dtype(dt):
            continue
        col = out.iloc[:, j]
        if pd.api.types.is_string_dtype(dt) and not pd.api.types.is_object_dtype(dt):
            s = col.astype(str)
            risky = s.str.startswith(FORMULA_PREFIXES) & ~s.str.fullmatch(_PLAIN_NUMBER_RE.pattern) & col.notna()
            if risky.any():
                out.isetitem(j, col.mask(risky, "'" + s))
        else:
            out.isetitem(j, col.map(_escape_cell))
    return out


_PLAIN_NUMBER_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _escape_cell(v):
    if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) and not _PLAIN_NUMBER_RE.fullmatch(v):
        return "'" + v
    return v


# =========================================================================================
# Scaling a table's numeric columns (issue #19 item 4)


def check_scaling(scaling) -> str:
    """One of SCALINGS (None means "auto"; "zscore" / "standard" are taken for "z-score");
    InputError naming the choices otherwise."""
    if scaling is None:
        return "auto"
    if not isinstance(scaling, str):
        raise InputError(f"scaling has to be one of {', '.join(SCALINGS)}, but is {type(scaling).__name__} {scaling!r}")
    s = scaling.strip().lower()
    s = {"zscore": "z-score", "z": "z-score", "standard": "z-score", "": "auto"}.get(s, s)
    if s not in SCALINGS:
        raise InputError(f"scaling {scaling!r} is not one of {', '.join(SCALINGS)}")
    return s


def applied_scaling(notes: list[str]) -> str | None:
    """"z-scored" or "robust-scaled" when a loader scaled the columns (read from its notes), else None."""
    for n in notes:
        for how in ("z-scored", "robust-scaled"):
            if n.startswith(f"numeric columns {how}"):
                return how
    return None


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×"


def scale_columns(vectors: np.ndarray, scaling: str = "auto") -> tuple[np.ndarray, str]:
    """Vectors whose dimensions are a table's separate numeric columns, scaled per column, and a note
    saying what was done. "z-score": (x − mean) / std; "robust": (x − median) / IQR (a column with
    zero IQR is divided by its std instead); "auto": z-score when max(std) / min(std over columns
    with std > 0) > AUTO_SCALE_RATIO, else none; "none": as they are. Constant columns stay constant
    (centred at 0 when scaled). Returns float32 (N, D)."""
    scaling = check_scaling(scaling)
    mean, std = _column_mean_std(vectors)
    positive = std[std > 0]
    ratio = float(positive.max() / positive.min()) if len(positive) else 1.0
    spread = f"column scales differed {_times(ratio)}"
    chosen = scaling != "auto"
    if scaling == "auto":
        if ratio <= AUTO_SCALE_RATIO:
            return vectors, (f"numeric columns kept as they are (column scales within {_times(ratio)}; 'auto' "
                             f"z-scores them when they differ by more than {AUTO_SCALE_RATIO:g}×)")
        scaling = "z-score"
    if scaling == "none":
        return vectors, f"numeric columns kept as they are, as chosen ({spread})"
    constant = int((std == 0).sum())
    extra = f"; {constant} constant column(s) set to 0" if constant else ""
    if scaling == "z-score":
        scale = np.where(std > 0, std, 1.0)
        out = np.empty(vectors.shape, np.float32)
        for s, block in _row_blocks(vectors):  # in float64, a block at a time (no float64 copy of the whole)
            out[s:s + len(block)] = (np.asarray(block, dtype=np.float64) - mean) / scale
        note = (f"numeric columns z-scored, as chosen ({spread}{extra})" if chosen else
                f"numeric columns z-scored ({spread}{extra}); choose 'none' to keep raw values")
    else:  # robust
        x = np.asarray(vectors, dtype=np.float64)
        q25, median, q75 = np.percentile(x, [25, 50, 75], axis=0)
        iqr = q75 - q25
        no_iqr = int(((iqr == 0) & (std > 0)).sum())
        scale = np.where(iqr > 0, iqr, np.where(std > 0, std, 1.0))
        out = (x - median) / scale
        if no_iqr:
            extra += f"; {no_iqr} column(s) with zero IQR divided by their standard deviation"
        note = f"numeric columns robust-scaled, (x − median) / IQR, as chosen ({spread}{extra})"
    return np.ascontiguousarray(out, dtype=np.float32), note


def _row_blocks(x: np.ndarray, values: int = 1 << 20):
    """(first row, rows) of x in blocks of about `values` values."""
    step = max(1, values // max(1, x.shape[1]))
    for s in range(0, len(x), step):
        yield s, x[s:s + step]


def _column_mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation in float64, two passes over row blocks: what
    np.asarray(x, np.float64).std(axis=0) gives (the same for one block) without a float64 copy."""
    n = len(x)
    total = np.zeros(x.shape[1], np.float64)
    for _, block in _row_blocks(x):
        total += np.asarray(block, dtype=np.float64).sum(axis=0)
    mean = total / n
    sq = np.zeros(x.shape[1], np.float64)
    for _, block in _row_blocks(x):
        dev = np.asarray(block, dtype=np.float64) - mean
        sq += np.multiply(dev, dev).sum(axis=0)
    return mean, np.sqrt(sq / n)


# =========================================================================================
# Intermediate result: vectors + metadata before they become a Corpus


class _Parts:
    def __init__(self, vectors: np.ndarray, meta, notes: list[str], texts: list[str] | None = None, *,
                 from_columns: bool = False):
        self.vectors, self.meta, self.notes, self.texts = vectors, meta, notes, texts
        self.from_columns = from_columns  # the vectors are a table's separate numeric columns (may be scaled)

    def scale(self, scaling: str) -> None:
        """Scale the columns (see scale_columns); the note goes right after the "vectors from" one."""
        self.vectors, note = scale_columns(self.vectors, scaling)
        if note:
            self.notes.insert(min(1, len(self.notes)), note)

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
    kind = _kind(ext, head) if ext not in OFFICE_EXTENSIONS else None
    if kind is None:
        if ext in OFFICE_EXTENSIONS:
            raise InputError(f"{fname}: unsupported file type {ext!r} ({OFFICE_EXTENSIONS[ext]}); supported: "
                             f"{SUPPORTED_FORMATS}")
        if ext in IMAGE_EXTENSIONS:
            raise InputError(f"{fname}: a single image; upload several images, or a .zip or folder of images")
        raise InputError(f"{fname}: unsupported file type {ext or '(no extension)'!r}; supported: {SUPPORTED_FORMATS}")
    notes: list[str] = []
    if kind == "zip":
        return _load_zip(p, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
    # .npy and parquet are read from the file itself (no copy of its bytes in memory: issue #21)
    data = p.read_bytes() if kind not in ("npy", "parquet") else b""
    try:
        if kind == "npy":
            vectors = _vectors_from_npy(p, fname)
            return _Parts(vectors, _empty_meta(len(vectors)), notes)
        if kind == "npz":
            return _parts_from_npz(data, fname, max_bytes=max_bytes)
        if kind == "parquet":
            return _parts_from_parquet(p, fname, notes, max_bytes=max_bytes)
        if kind == "csv":
            return _parts_from_csv(data, fname, notes)
        if kind == "tsv":
            vectors = _vectors_from_tsv(data, fname, notes)
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


def _vectors_from_npy(src: bytes | Path, fname: str) -> np.ndarray:
    """An .npy file's array, from its bytes or (without a copy of them) from its path: np.load reads
    the data straight into the one array it returns. Not memory-mapped: a user's file may be
    rewritten while the server runs (the stored copy under the cache is; backends/corpora/uploads.py)."""
    if isinstance(src, (bytes, bytearray)):
        head, size = bytes(src[:8]), len(src)
    else:
        with open(src, "rb") as f:
            head = f.read(8)
        size = os.path.getsize(src)
    if not head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"\x80")):  # \x80: a raw pickle (protocol ≥ 2)
        raise InputError(f"{fname}: not a valid .npy file (it does not start with the .npy header); "
                         "save it with np.save")
    if head.startswith(b"\x93NUMPY"):
        with (io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")) as fp:
            header = _npy_header(fp)
            if header is not None:
                _check_npy_header(header, fname, available=size - fp.tell())
    try:
        arr = np.load(io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src, allow_pickle=False)
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


def _npy_header(fp) -> tuple[tuple, np.dtype] | None:
    """(shape, dtype) from an .npy header, reading nothing else; None when it cannot be parsed
    (np.load then reports the problem)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fp)
        else:
            return None
    except Exception:  # a malformed header: np.load's own message is clearer
        return None
    return tuple(int(s) for s in shape), dtype


def _check_npy_header(header: tuple[tuple, np.dtype], what: str, *, available: int | None) -> None:
    """Refuse an array whose header declares more cells than the limit, or more bytes than the file
    holds, before its data is allocated."""
    shape, dtype = header
    cells = int(np.prod(shape, dtype=object)) if shape else 1
    lim = _limits()
    if cells > lim.max_cells:
        raise InputError(f"{what}: shape {shape} is {cells:,} values, over the limit of {lim.max_cells:,} values")
    if available is not None and not dtype.hasobject and cells * dtype.itemsize > available:
        raise InputError(f"{what}: its header declares shape {shape} of {dtype} ({_fmt_bytes(cells * dtype.itemsize)}) "
                         f"but the file holds only {_fmt_bytes(max(available, 0))} of data; it is truncated or corrupt")


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
    _check_zip_directory(data, fname)
    notes: list[str] = []
    declared: dict[str, bool] = {}  # member → holds Python objects
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in _check_archive(zf, fname, max_bytes=max_bytes):
            if info.is_dir() or not info.filename.endswith(".npy"):
                continue
            try:
                with zf.open(info) as f:
                    header = _npy_header(f)
                    header_len = f.tell()
            except Exception:  # a corrupt or encrypted member: reported when it is read below
                continue
            if header is not None:
                key = info.filename[: -len(".npy")]
                _check_npy_header(header, f"{fname}: array {key!r}", available=info.file_size - header_len)
                declared[key] = header[1].hasobject
    arrays = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        for k in list(z.files):
            if declared.get(k):
                notes.append(f"skipped array {k!r} in {fname}: it holds Python objects (pickle)")
                continue
            try:
                a = z[k]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    notes.append(f"skipped array {k!r} in {fname}: it holds Python objects (pickle)")
                else:
                    notes.append(f"skipped array {k!r} in {fname}: not a valid .npy array ({_short(exc, 80)})")
                continue
            except Exception as exc:  # bad CRC, truncated member, encrypted
                notes.append(f"skipped array {k!r} in {fname}: could not read it ({_short(exc, 80)})")
                continue
            if not isinstance(a, np.ndarray):
                notes.append(f"skipped member {k!r} in {fname}: not a .npy array")
                continue
            arrays[k] = a
    chosen = next((k for k, a in arrays.items()
                   if a.ndim == 2 and not a.dtype.names and (np.issubdtype(a.dtype, np.number) or a.dtype == bool)
                   and not np.issubdtype(a.dtype, np.complexfloating)), None)
    if chosen is None:
        shapes = ", ".join(f"{k} {a.dtype} {a.shape}" for k, a in arrays.items()) or "none readable"
        skipped = f"; {'; '.join(notes)}" if notes else ""
        raise InputError(f"{fname}: no numeric 2-D array among its arrays ({shapes}){skipped}")
    vectors = _numeric_2d(arrays[chosen], fname)
    import pandas as pd

    meta = pd.DataFrame(index=range(len(vectors)))
    for k, a in arrays.items():
        if k != chosen and a.ndim == 1 and len(a) == len(vectors) and not a.dtype.names:
            meta[k] = a
    notes.insert(0, f"vectors from array {chosen!r} of {fname}"
                 + (f"; metadata from {', '.join(map(repr, meta.columns))}" if len(meta.columns) else ""))
    return _Parts(vectors, meta, notes)


def _open_parquet(p: Path, fname: str, *, max_bytes: int):
    """The file's ParquetFile, after the checks its footer allows (columns, values, decompressed size)."""
    import pyarrow.parquet as pq

    # streamed through a small buffer, not the whole column chunk read ahead
    pf = pq.ParquetFile(p, buffer_size=1 << 20, pre_buffer=False)
    try:
        _check_parquet_footer(pf, fname, max_bytes=max_bytes)
    except BaseException:
        pf.close()
        raise
    return pf


def _check_parquet_footer(pf, fname: str, *, max_bytes: int) -> None:
    md = pf.metadata
    lim = _limits()
    ncols, nrows = md.num_columns, md.num_rows
    if ncols > lim.max_columns:
        raise InputError(f"{fname}: {ncols:,} columns, over the limit of {lim.max_columns:,} columns")
    cells = nrows * ncols
    if md.num_row_groups * ncols <= 1_000_000:  # values of list columns count too (a vector column holds N × D)
        cells = max(cells, sum(md.row_group(i).column(j).num_values
                               for i in range(md.num_row_groups) for j in range(ncols)))
    if cells > lim.max_cells:
        raise InputError(f"{fname}: {nrows:,} rows × {ncols:,} columns hold {cells:,} values, over the limit of "
                         f"{lim.max_cells:,} values")
    expanded = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    limit = lim.archive_expansion * max_bytes
    if expanded > limit:
        raise InputError(
            f"{fname}: expands to {_fmt_bytes(expanded)} when decompressed, over the limit of "
            f"{_fmt_bytes(limit)}"
        )
    _check_time(fname, "reading its metadata")


def _parts_from_parquet(p: Path, fname: str, notes: list[str], *, max_bytes: int) -> _Parts:
    """Vectors and metadata from a parquet file, read column by column (issue #21 item 2).

    The common layouts (a list / fixed-size-list column of numbers, or numeric columns) are read
    with pyarrow into one preallocated float32 array: a list column in batches of rows (each
    batch's values taken zero-copy, then copied once), numeric columns 16 at a time; no Python
    lists, no float64 copy of the whole table. The metadata columns alone go through pandas.
    Peak memory for 200,000 × 384 float32: 1.7× the vectors (8× before; bench/bench_parquet_memory.py).
    Anything else (text vector cells, nulls, ragged lists, duplicate names) takes the general
    path, `_parts_from_table` on the whole table, whose messages name the problem; both give the
    same vectors, metadata and notes (tests/test_large_corpora.py)."""
    pf = _open_parquet(p, fname, max_bytes=max_bytes)
    try:
        parts = _parquet_columnwise(pf, fname)
        if parts is not None:
            notes.extend(parts.notes)
            parts.notes = notes
            return parts
        _check_time(fname, "reading it")
        return _parts_from_table(pf.read().to_pandas(), fname, notes, csv=False)
    finally:
        pf.close()


PARQUET_BATCH_VALUES = 1 << 20  # values read at a time from a parquet vector column


def _parquet_columnwise(pf, fname: str) -> _Parts | None:
    """`_parts_from_parquet`'s fast path; None when the file needs the general one."""
    import pyarrow as pa

    schema = pf.schema_arrow
    pandas_meta = schema.pandas_metadata or {}
    index_cols = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)]
    fields = [f for f in schema if f.name not in index_cols]
    names = [f.name for f in fields]
    n = pf.metadata.num_rows
    if not names or n == 0 or len(set(names)) != len(names) or len(index_cols) + len(fields) != len(schema):
        return None
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) for f in fields]
    listy = [pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)
             or pa.types.is_map(f.type) for f in fields]
    lower = {str(c).lower(): j for j, c in enumerate(names)}
    notes: list[str] = []
    vec_pos = next((lower[c] for c in VECTOR_COLUMN_NAMES if c in lower), None)
    named = vec_pos is not None
    if vec_pos is None:
        vec_pos = next((j for j, is_list in enumerate(listy) if is_list), None)
    if vec_pos is not None:
        vectors = _arrow_list_vectors(pf, names[vec_pos], n)
        if vectors is None:
            return None
        vectors = validate_vectors(vectors, what=fname)
        meta_pos = [j for j in range(len(names)) if j != vec_pos]
        head = f"vectors from column {names[vec_pos]!r} ({vectors.shape[1]} dims)"
    else:
        dims = [j for j, is_num in enumerate(numeric) if is_num and str(names[j]).lower() not in NON_DIMENSION_COLUMNS]
        kept = [j for j, is_num in enumerate(numeric) if is_num and str(names[j]).lower() in NON_DIMENSION_COLUMNS]
        if not dims:
            return None
        _check_time(fname, "reading its numeric columns")
        vectors = validate_vectors(_arrow_columns_vectors(pf, [names[j] for j in dims], n), what=fname)
        dim_set = set(dims)
        meta_pos = [j for j in range(len(names)) if j not in dim_set]
        shown = (f"{names[dims[0]]!r} … {names[dims[-1]]!r}" if len(dims) > 3
                 else ", ".join(repr(names[j]) for j in dims))
        head = f"vectors from {len(dims)} numeric columns ({shown})"
        if kept:
            notes.append(f"numeric column(s) {', '.join(repr(names[j]) for j in kept)} kept as metadata, not as dimensions")
    _check_time(fname, "reading its metadata columns")
    meta_pos = _capped_meta_columns(meta_pos, names, fname, notes)
    if meta_pos:
        table = pf.read(columns=[names[j] for j in meta_pos], use_pandas_metadata=True)
        if not named and vec_pos is not None:  # other list columns with a value: the general path's note
            others = [j for j in meta_pos if listy[j] and table.column(names[j]).null_count < n]
            if others:
                if any(j < vec_pos for j in others):  # an all-null list column came first: as the general path
                    return None
                notes.insert(0, f"several list columns ({_listing([repr(names[j]) for j in [vec_pos, *others]])}); "
                                "used the first. Name the vector column 'vector' or 'embedding' to choose")
        meta = table.to_pandas()
        del table
        meta = meta.reset_index(drop=True)
        if list(meta.columns) != [names[j] for j in meta_pos]:
            return None
        notes.append(f"metadata columns: {_listing([str(c) for c in meta.columns], 20)}")
    else:
        meta = _empty_meta(n)
    notes.insert(0, head)
    meta = _sanitize_meta(meta, copy=False)
    return _Parts(vectors, meta, notes, texts=_texts_from(meta, notes), from_columns=vec_pos is None)


def _arrow_list_vectors(pf, name: str, n: int) -> np.ndarray | None:
    """A list / fixed-size-list column of numbers as one float32 (N, D) array; None when a row is
    null, the lists differ in length, or the values are not numbers. Read in batches of about
    PARQUET_BATCH_VALUES values, each batch's values taken as they are (zero-copy) and copied
    once into the array: reading a 200,000 × 384 list column whole took about 1.4 GB (the nested
    column's levels and pages besides the values), in batches it takes the array and some 100 MB."""
    import pyarrow as pa

    out: np.ndarray | None = None
    row, d = 0, None
    batch = max(64, PARQUET_BATCH_VALUES // max(1, _list_width_hint(pf, name)))
    for rb in pf.iter_batches(batch_size=batch, columns=[name], use_pandas_metadata=False):
        chunk = rb.column(0)
        if len(chunk) == 0:
            continue
        if chunk.null_count or not (pa.types.is_list(chunk.type) or pa.types.is_large_list(chunk.type)
                                    or pa.types.is_fixed_size_list(chunk.type)):
            return None
        if pa.types.is_fixed_size_list(chunk.type):
            width = chunk.type.list_size
        else:
            lengths = np.diff(chunk.offsets.to_numpy())
            width = int(lengths[0])
            if not (lengths == width).all():
                return None
        values = chunk.flatten()
        vt = values.type
        if width == 0 or values.null_count or not (pa.types.is_integer(vt) or pa.types.is_floating(vt)):
            return None
        if d is None:
            d = width
            out = np.empty((n, d), np.float32)
        elif width != d:
            return None
        if row + len(chunk) > n:
            return None
        block = values.to_numpy(zero_copy_only=False).reshape(len(chunk), d)  # zero-copy for numbers without nulls
        # integers as the general path converts them: through float64
        out[row:row + len(block)] = block.astype(np.float64) if block.dtype.kind in "iu" else block
        row += len(block)
    if out is None or row != n:
        return None
    return out


def _list_width_hint(pf, name: str) -> int:
    """Values a row of a list column holds, from the footer (for the batch size); 1 when unknown."""
    md = pf.metadata
    if md.num_rows == 0:
        return 1
    leaf = next((i for i in range(md.num_columns) if md.schema.column(i).path.split(".")[0] == name), None)
    if leaf is None:
        return 1
    values = sum(md.row_group(g).column(leaf).num_values for g in range(md.num_row_groups))
    return max(1, values // md.num_rows)


def _arrow_columns_vectors(pf, names: list[str], n: int) -> np.ndarray:
    """Numeric columns as one float32 (N, len(names)) array, read a few columns of one row group at
    a time (nulls become NaN, which validate_vectors reports by row)."""
    d = len(names)
    out = np.empty((n, d), np.float32)
    per = max(1, min(d, 16))
    row = 0
    for rg in range(pf.num_row_groups):
        rows = pf.metadata.row_group(rg).num_rows
        for c0 in range(0, d, per):
            table = pf.read_row_group(rg, columns=names[c0:c0 + per], use_pandas_metadata=False)
            cols = []
            for k in range(table.num_columns):
                col = table.column(k).to_numpy()  # one contiguous numpy array (NaN for nulls)
                # integers as the general path converts them (through float64), floats to float32
                cols.append(np.asarray(col, dtype=np.float64 if col.dtype.kind in "iuO" else np.float32))
            del table
            out[row:row + rows, c0:c0 + len(cols)] = np.stack(cols, axis=1)  # a few columns: rows of 64 bytes
            del cols
        row += rows
    return out


# -- text tables: encoding, shape, then parsing ---------------------------------------------

_MAGIC = (  # (first bytes, what the file is, what to do)
    (b"PK\x03\x04", "a zip archive", " (an .xlsx workbook is one too: save it as CSV)"),
    (b"\x93NUMPY", "a NumPy .npy array", "; rename it to .npy"),
    (b"PAR1", "a parquet file", "; rename it to .parquet"),
    (b"\x89PNG", "a PNG image", ""), (b"\xff\xd8\xff", "a JPEG image", ""), (b"GIF8", "a GIF image", ""),
    (b"%PDF", "a PDF document", ""), (b"\x1f\x8b", "gzip-compressed data", "; decompress it first"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "; decompress it first"), (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", ""),
    (b"Rar!", "a RAR archive", ""), (b"\xd0\xcf\x11\xe0", "an old Office document", " (.xls? save it as CSV)"),
)
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32 (little-endian)"), (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32 (big-endian)"),
         (b"\xff\xfe", "utf-16-le", "UTF-16 (little-endian)"), (b"\xfe\xff", "utf-16-be", "UTF-16 (big-endian)"))
_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 12, 13}) + b"\x7f"


def _decode_text(data: bytes, fname: str, what: str) -> tuple[bytes, str | None]:
    """The file as UTF-8 bytes for a parser, and a note naming its encoding when it was not UTF-8.

    UTF-8 (with or without a byte-order mark) passes as it is; UTF-16/32 are found by their
    byte-order mark, or, without one, by the NUL bytes of ASCII text in UTF-16; other bytes that
    are not UTF-8 are read as Windows-1252 (Latin-1). Binary data is refused with what it looks like.
    """
    for magic, kind, hint in _MAGIC:
        if data.startswith(magic):
            raise InputError(f"{fname}: this is {kind}, not {what} text{hint}")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            return _transcode(data[len(bom):], codec, label, fname, what, how="its byte-order mark")
    sample = data[:4096]
    if b"\x00" in sample:
        half = max(1, len(sample) // 2)
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if odd >= 0.3 * half and even <= odd // 8:
            return _transcode(data, "utf-16-le", "UTF-16 (little-endian)", fname, what, how="its NUL bytes")
        if even >= 0.3 * half and odd <= even // 8:
            return _transcode(data, "utf-16-be", "UTF-16 (big-endian)", fname, what, how="its NUL bytes")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{fname}: binary data, not {what} text (a NUL byte at offset {nul:,}); "
                         f"save it as text in UTF-8")
    control = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if control > max(2, len(sample) // 100):
        raise InputError(f"{fname}: binary data, not {what} text ({control} control bytes in its first "
                         f"{len(sample):,}); save it as text in UTF-8")
    if data.isascii():
        return data, None
    try:
        data.decode("utf-8")
        return data, None
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start:,}"
    try:
        text, label = data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, label = data.decode("latin-1"), "Latin-1"
    return text.encode("utf-8"), f"{fname}: not valid UTF-8 ({where}); read as {label}"


def _transcode(data: bytes, codec: str, label: str, fname: str, what: str, *, how: str) -> tuple[bytes, str]:
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise InputError(f"{fname}: looks like {label} text ({how}) but is not valid {label} "
                         f"(at byte offset {exc.start:,}: {exc.reason}); save it as {what} in UTF-8") from None
    if "\x00" in text:
        raise InputError(f"{fname}: binary data, not {what} text (NUL characters after decoding it as {label})")
    return text.encode("utf-8"), f"{fname}: read as {label} (found by {how}), not UTF-8"


_NON_BLANK = re.compile(rb"[^\r\n]")


def _first_line(data: bytes) -> tuple[bytes, int] | None:
    """The first non-blank line and the byte offset where it starts, or None for a blank file."""
    m = _NON_BLANK.search(data)
    if m is None:
        return None
    start = m.start()
    end = data.find(b"\n", start)
    if end < 0:
        end = len(data)
    line = data[start:end]
    if b"\n" not in data and b"\r" in line.rstrip(b"\r"):  # old Mac line ends: \r only
        line = line[: line.index(b"\r")]
    return line.rstrip(b"\r"), start


def _check_text_shape(data: bytes, fname: str, sep: str, first: bytes) -> tuple[int, int]:
    """(columns in the first line, lines) — refused over the limits before any parser sees the file.

    Columns count the separators in the first line (quoted ones too: an upper bound); cells
    estimate lines × columns (a parser fills short rows, so it allocates that many)."""
    lim = _limits()
    cols = first.count(sep.encode()) + 1
    if cols > lim.max_columns:
        raise InputError(f"{fname}: {cols:,} columns in its first line, over the limit of {lim.max_columns:,} "
                         "columns; a table of vectors has one column per dimension (or one column of lists)")
    newline = b"\n" if b"\n" in data else b"\r"
    lines = data.count(newline) + (0 if data.endswith(newline) else 1)
    cells = lines * cols
    if cells > lim.max_cells:
        raise InputError(f"{fname}: about {lines:,} lines × {cols:,} columns = {cells:,} cells, over the limit of "
                         f"{lim.max_cells:,} cells")
    memory = cells * 8 + len(data)
    if memory > lim.max_parse_memory:
        raise InputError(f"{fname}: reading about {cells:,} cells would take about {_fmt_bytes(memory)} of memory, "
                         f"over the limit of {_fmt_bytes(lim.max_parse_memory)}")
    return cols, lines


def _split_fields(line: bytes, sep: str) -> list[str]:
    import csv

    text = line.decode("utf-8", errors="replace")
    try:
        return next(csv.reader([text], delimiter=sep), [])
    except csv.Error:
        return text.split(sep)


def _parts_from_csv(data: bytes, fname: str, notes: list[str]) -> _Parts:
    """A CSV: encoding, then the cheap shape checks, then a fast path for all-numeric tables
    (np.loadtxt, no per-column cost), else pandas in chunks with the clock checked between."""
    data, encoding = _decode_text(data, fname, "CSV")
    if encoding:
        notes.append(encoding)
    found = _first_line(data)
    if found is None:
        raise InputError(f"{fname}: no columns (the file holds only blank lines)")
    first, _ = found
    sep = ","
    if b"," not in first:  # maybe another delimiter (spreadsheets in some locales write ';')
        other = next((d for d in (";", "\t", "|") if d.encode() in first), None)
        if other:
            sep = other
            notes.append(f"{fname}: columns separated by {sep!r}, not commas")
    cols, _ = _check_text_shape(data, fname, sep, first)
    fields = _split_fields(first, sep)
    headerless = bool(fields) and all(_is_number(f) for f in fields)
    _check_time(fname, "checking its shape")

    first_end = data.find(b"\n", found[1])
    has_rows = headerless or (first_end >= 0 and _NON_BLANK.search(data, first_end) is not None)
    parts = _numeric_csv_fast(data, fname, sep, fields, headerless, notes) if has_rows else None
    if parts is not None:
        return parts
    df = _read_csv_chunks(data, fname, sep=sep, header=None if headerless else "infer", cols=cols)
    if headerless:
        df.columns = [f"d{i}" for i in range(len(df.columns))]
        notes.append(f"{fname} has no header row: all {len(df.columns)} columns read as values")
    return _parts_from_table(df, fname, notes, csv=True, first_line=1 if headerless else 2)


def _numeric_csv_fast(data: bytes, fname: str, sep: str, fields: list[str], headerless: bool,
                      notes: list[str]) -> _Parts | None:
    """All cells numbers, every row as wide as the first line, no id/label column: read with
    np.loadtxt (a C parser without pandas' per-column cost). None: use the general path."""
    names = [f"d{i}" for i in range(len(fields))] if headerless else \
        [f if f.strip() else f"Unnamed: {j}" for j, f in enumerate(fields)]  # as pandas names them
    if not headerless and (any(n.strip().lower() in NON_DIMENSION_COLUMNS + VECTOR_COLUMN_NAMES for n in names)
                           or len(set(names)) != len(names)):
        return None  # an id / label / index column to keep as metadata, or names pandas would rename
    try:
        arr = np.loadtxt(io.BytesIO(data), delimiter=sep, skiprows=0 if headerless else 1, dtype=np.float64,
                         ndmin=2, comments=None, encoding="utf-8", quotechar='"')
    except (ValueError, UnicodeDecodeError):
        return None
    if arr.shape[1] != len(fields) or arr.shape[0] == 0:
        return None
    if headerless:
        notes.append(f"{fname} has no header row: all {len(names)} columns read as values")
    vectors = validate_vectors(arr, what=fname)
    shown = f"{names[0]!r} … {names[-1]!r}" if len(names) > 3 else ", ".join(map(repr, names))
    notes.insert(0, f"vectors from {len(names)} numeric columns ({shown})")
    return _Parts(vectors, _empty_meta(len(vectors)), notes, from_columns=True)


def _read_csv_chunks(data: bytes, fname: str, *, sep: str, header, cols: int):
    """pandas.read_csv in chunks of rows (about limits.csv_chunk_cells cells, at least 1,000 rows,
    so a wide file is not cut into many slow chunks), checking the clock between chunks."""
    import pandas as pd

    rows = max(1_000, _limits().csv_chunk_cells // max(cols, 1))
    chunks = []
    done = 0
    with pd.read_csv(io.BytesIO(data), sep=sep, header=header, chunksize=rows, encoding_errors="replace") as reader:
        for chunk in reader:
            chunks.append(chunk)
            done += len(chunk)
            _check_time(fname, f"parsing rows ({done:,} read)")
    if not chunks:  # only a header
        return pd.read_csv(io.BytesIO(data), sep=sep, header=header, nrows=0, encoding_errors="replace")
    if len(chunks) == 1:
        return chunks[0]
    return pd.concat(chunks, ignore_index=True)


def _parts_from_table(df, fname: str, notes: list[str], *, csv: bool, first_line: int = 2) -> _Parts:
    """Vectors from a vector column, or from all numeric columns; the rest is metadata.

    Column handling is vectorised (issue #20): column kinds come from the dtypes at once, list
    and mostly-numeric text columns are told apart on a sample of rows, and the table is cut by
    position, so a wide table costs little more than pandas' own parsing."""
    if len(df.columns) == 0:
        raise InputError(f"{fname}: no columns")
    if len(df) == 0:
        raise InputError(f"{fname}: no rows (only a header)")
    _check_time(fname, "sorting out its columns")
    row_name = (lambda i: f"line {i + first_line}") if csv else (lambda i: f"row {i}")
    names = list(df.columns)
    lower = {str(c).lower(): j for j, c in enumerate(names)}
    numeric = _numeric_columns(df)
    other = [j for j, is_num in enumerate(numeric) if not is_num]
    sample = _sample_rows(df, other)  # object (rows, len(other))
    firsts = _first_values(df, other, sample)

    vec_pos = next((lower[n] for n in VECTOR_COLUMN_NAMES if n in lower), None)
    if vec_pos is None:
        list_cols = [j for j in other if j in firsts and _is_list_value(firsts[j], csv=csv)]
        if list_cols:
            vec_pos = list_cols[0]
            if len(list_cols) > 1:
                notes.append(f"several list columns ({_listing([repr(names[j]) for j in list_cols])}); used the first. "
                             "Name the vector column 'vector' or 'embedding' to choose")

    if vec_pos is not None:
        vec_col = names[vec_pos]
        vectors = _vectors_from_column(df.iloc[:, vec_pos], fname, vec_col, row_name)
        meta_pos = [j for j in range(len(names)) if j != vec_pos]
        notes.insert(0, f"vectors from column {vec_col!r} ({vectors.shape[1]} dims)")
    else:
        if csv:
            _check_mostly_numeric_columns(df, other, sample, fname, row_name)
        dims, kept = [], []
        for j, is_num in enumerate(numeric):
            if is_num:
                (kept if str(names[j]).lower() in NON_DIMENSION_COLUMNS else dims).append(j)
        if not dims:
            raise InputError(
                f"{fname}: found no vectors: no column named {' / '.join(VECTOR_COLUMN_NAMES)}, no column of lists, "
                f"and no numeric columns; columns are: {', '.join(map(str, names[:20]))}"
                + (f", … ({len(names) - 20:,} more)" if len(names) > 20 else "")
            )
        block = df if len(dims) == len(names) else df.iloc[:, dims]
        vectors = validate_vectors(block.to_numpy(dtype=np.float64, na_value=np.nan), what=fname)
        dim_set = set(dims)
        meta_pos = [j for j in range(len(names)) if j not in dim_set]
        shown = (f"{names[dims[0]]!r} … {names[dims[-1]]!r}" if len(dims) > 3
                 else ", ".join(repr(names[j]) for j in dims))
        notes.insert(0, f"vectors from {len(dims)} numeric columns ({shown})")
        if kept:
            notes.append(f"numeric column(s) {', '.join(repr(names[j]) for j in kept)} kept as metadata, not as dimensions")
    meta_pos = _capped_meta_columns(meta_pos, names, fname, notes)
    meta = df.iloc[:, meta_pos] if meta_pos else _empty_meta(len(df))
    if len(meta.columns):
        notes.append(f"metadata columns: {_listing([str(c) for c in meta.columns], 20)}")
    meta = _sanitize_meta(meta.reset_index(drop=True), copy=False)
    return _Parts(vectors, meta, notes, texts=_texts_from(meta, notes), from_columns=vec_pos is None)


def _numeric_columns(df) -> list[bool]:
    """Per column: numeric (integers or floats, numpy or pandas' nullable ones), not boolean or
    complex. From each dtype's kind: one attribute read a column, none of pandas' per-column checks."""
    return [getattr(dt, "kind", "O") in "iuf" for dt in df.dtypes]


def _sample_rows(df, positions: list[int]) -> np.ndarray:
    """The first LIST_SAMPLE_ROWS rows of these columns as objects; for a very wide table (pandas
    pays per column) only the first row."""
    if not positions:
        return np.empty((0, 0), dtype=object)
    if len(positions) > 2_000:
        return df.iloc[0].to_numpy(dtype=object)[positions][None, :]
    return df.iloc[:LIST_SAMPLE_ROWS, positions].to_numpy(dtype=object)


def _first_values(df, positions: list[int], sample: np.ndarray) -> dict[int, object]:
    """The first non-missing value of each column: from the sample, else from the whole column."""
    import pandas as pd

    out: dict[int, object] = {}
    if not positions:
        return out
    present = ~_isna_cells(sample)
    has = present.any(axis=0)
    first_row = present.argmax(axis=0)
    for k, j in enumerate(positions):
        if has[k]:
            out[j] = sample[first_row[k], k]
        else:
            col = df.iloc[:, j]
            i = col.first_valid_index()
            if i is not None:
                out[j] = col.loc[i] if not isinstance(col.loc[i], pd.Series) else col.loc[i].iloc[0]
    return out


def _isna_cells(a: np.ndarray) -> np.ndarray:
    import pandas as pd

    out = np.asarray(pd.isna(a), dtype=bool)
    return out if out.shape == a.shape else np.zeros(a.shape, dtype=bool)


def _is_list_value(v, *, csv: bool) -> bool:
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    if csv and isinstance(v, str):
        s = v.strip()
        return len(s) >= 2 and s[0] == "[" and s[-1] == "]" and _parse_number_list(s) is not None
    return False


def _capped_meta_columns(meta_pos: list[int], names: list, fname: str, notes: list[str]) -> list[int]:
    """At most limits.max_meta_columns metadata columns (id, text and label columns first)."""
    most = _limits().max_meta_columns
    if len(meta_pos) <= most:
        return meta_pos
    wanted = {"id", *TEXT_COLUMN_NAMES, *NON_DIMENSION_COLUMNS}
    first = [j for j in meta_pos if str(names[j]).lower() in wanted][:most]
    rest = [j for j in meta_pos if j not in set(first)][: most - len(first)]
    keep = sorted(first + rest)
    notes.append(f"{fname}: {len(meta_pos):,} metadata columns, over the limit of {most:,}; kept "
                 f"{len(keep):,} ({_listing([str(names[j]) for j in keep], 5)}) and dropped the rest")
    return keep


def _parse_number_list(s: str) -> list[float] | None:
    body = s.strip()
    if body[:1] in "[(" and body[-1:] in "])":
        body = body[1:-1]
    try:
        return [float(t) for t in body.replace(",", " ").split()]
    except ValueError:
        return None


_BRACKETS = r"(?s)^\s*[\[(](.*)[\])]\s*$"


def _vectors_from_column(col, fname: str, cname, row_name) -> np.ndarray:
    fast = _vectors_from_column_fast(col)
    if fast is not None:
        return validate_vectors(fast, what=fname)
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


def _vectors_from_column_fast(col) -> np.ndarray | None:
    """A whole vector column at once (text "[1, 2, 3]" cells through np.loadtxt, list / array cells
    through one np.asarray); None when anything is off, and the row-by-row path names the problem."""
    import pandas as pd

    if len(col) == 0 or col.isna().any():
        return None
    first = col.iloc[0]
    try:
        if isinstance(first, str):
            if not (pd.api.types.is_string_dtype(col.dtype) or col.map(type).eq(str).all()):
                return None
            body = col.astype(str).str.replace(_BRACKETS, r"\1", regex=True).str.replace(",", " ", regex=False)
            arr = np.loadtxt(io.StringIO("\n".join(body.tolist())), dtype=np.float64, ndmin=2, comments=None)
        elif isinstance(first, (list, tuple, np.ndarray)):
            arr = np.asarray(col.tolist(), dtype=np.float64)
        else:
            return None
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[0] != len(col) or arr.shape[1] == 0:
        return None
    return arr


def _check_mostly_numeric_columns(df, positions: list[int], sample: np.ndarray, fname: str, row_name) -> None:
    """Text columns that are mostly numbers (≥ 90%) with a few typos: name the first bad cell.
    Only columns whose sampled cells are mostly numbers are checked in full."""
    for k, j in enumerate(positions):
        cells = [v for v in sample[:, k] if isinstance(v, str)] if sample.size else []
        if not cells or sum(_is_number(v) for v in cells) < 0.5 * len(cells):
            continue
        _check_mostly_numeric(df.iloc[:, j], fname, df.columns[j], row_name)


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


def _vectors_from_tsv(data: bytes, fname: str, notes: list[str] | None = None) -> np.ndarray:
    """vectors.tsv: tab-separated floats, one vector per line, no header."""
    import pandas as pd

    if not data.strip():
        raise InputError(f"{fname} is empty")
    data, encoding = _decode_text(data, fname, "TSV")
    if encoding and notes is not None:
        notes.append(encoding)
    found = _first_line(data)
    if found is None:
        raise InputError(f"{fname} is empty")
    _check_text_shape(data, fname, "\t", found[0])
    body = data.rstrip(b"\r\n")
    lines = body.count(b"\n") + 1
    arr = None
    try:  # fastest: numpy's C parser (it skips blank lines, so the row count is checked)
        arr = np.loadtxt(io.BytesIO(body), delimiter="\t", dtype=np.float64, ndmin=2, comments=None,
                         encoding="utf-8", quotechar=None)
        if arr.shape[0] != lines:
            arr = None
    except (ValueError, UnicodeDecodeError):
        arr = None
    if arr is None:
        _check_time(fname, "parsing it")
        try:  # pandas' C parser
            arr = pd.read_csv(io.BytesIO(body), sep="\t", header=None, dtype=np.float64, quoting=3,
                              skip_blank_lines=False).to_numpy()
        except Exception:
            arr = None
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
    is_csv = fname.lower().endswith(".csv")
    data, encoding = _decode_text(data, fname, "CSV" if is_csv else "TSV")
    if encoding:
        notes.append(encoding)
    found = _first_line(data)
    if found is None:
        raise InputError(f"{fname} is empty")
    _check_text_shape(data, fname, "," if is_csv else "\t", found[0])
    if is_csv:
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
    notes.append(f"metadata from {fname}: {_listing([str(c) for c in df.columns], 20)}")
    return _sanitize_meta(df)


# -- images ----------------------------------------------------------------------------


def _load_zip(p: Path, *, max_bytes: int, image_embedder, name: str):
    fname = p.name
    with open(p, "rb") as f:
        _check_zip_directory(f, fname)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
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
                vectors = _vectors_from_tsv(zf.read(vec[0]), f"{fname}:{vec[0].filename}", notes)
                parts = _Parts(vectors, _empty_meta(len(vectors)), notes)
                if meta:
                    mname = f"{fname}:{meta[0].filename}"
                    parts.attach(_read_metadata_table(zf.read(meta[0]), mname, n=len(vectors),
                                                      vectors_name=vec[0].filename, notes=notes), mname)
            except (zipfile.BadZipFile, RuntimeError, EOFError, OSError, NotImplementedError) as exc:
                raise InputError(f"{fname}: could not read ({_short(exc)})") from None
            return parts.to_corpus(name, source=fname)
        items = [(i.filename, (lambda i=i: zf.read(i))) for i in files]
        return _images_corpus(items, source=fname, notes=[], image_embedder=image_embedder, name=name)


def _check_zip_directory(src, fname: str) -> None:
    """Refuse a zip whose central directory lists more entries than the limit, from its end record
    alone (before zipfile builds an object per entry). Best effort: anything unusual is left to zipfile."""
    most = _limits().max_archive_members
    try:
        if isinstance(src, (bytes, bytearray)):
            size = len(src)
            tail_at = max(0, size - 65_557)
            tail = bytes(src[tail_at:])
        else:
            size = src.seek(0, os.SEEK_END)
            tail_at = max(0, size - 65_557)
            src.seek(tail_at)
            tail = src.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 22 > len(tail):
            return
        entries, cd_size = struct.unpack("<HI", tail[at + 10: at + 16])
        if entries == 0xFFFF and at >= 20 and tail[at - 20: at - 16] == b"PK\x06\x07":  # zip64
            (eocd64,) = struct.unpack("<Q", tail[at - 12: at - 4])
            if isinstance(src, (bytes, bytearray)):
                rec = bytes(src[eocd64: eocd64 + 56])
            else:
                src.seek(eocd64)
                rec = src.read(56)
            if rec[:4] == b"PK\x06\x06" and len(rec) == 56:
                entries, cd_size = struct.unpack("<Q", rec[32:40])[0], struct.unpack("<Q", rec[40:48])[0]
    except (OSError, struct.error, ValueError):
        return
    if entries > most:
        raise InputError(f"{fname}: {entries:,} entries; at most {most:,} are accepted")
    # the count can lie; the directory's size cannot (zipfile reads it all): allow 1 KB an entry
    if cd_size > most * 1024:
        raise InputError(f"{fname}: its list of entries takes {_fmt_bytes(cd_size)}, over the limit of "
                         f"{_fmt_bytes(most * 1024)} (1 KB for each of the {most:,} entries accepted)")


def _check_archive(zf: zipfile.ZipFile, fname: str, *, max_bytes: int) -> list[zipfile.ZipInfo]:
    """Reject zip-slip names and zip bombs before reading anything."""
    lim = _limits()
    infos = zf.infolist()
    for info in infos:
        if _unsafe_member(info.filename):
            raise InputError(
                f"{fname}: rejected: entry {info.filename!r} has an absolute path or '..' in its name "
                "(a zip-slip attempt); nothing was read"
            )
    files = [i for i in infos if not i.is_dir()]
    if len(files) > lim.max_archive_members:
        raise InputError(f"{fname}: {len(files):,} entries; at most {lim.max_archive_members:,} are accepted")
    total = sum(i.file_size for i in files)
    limit = lim.archive_expansion * max_bytes
    if total > limit:
        raise InputError(f"{fname}: expands to {_fmt_bytes(total)}, over the limit of {_fmt_bytes(limit)} "
                         f"({lim.archive_expansion}× the upload limit)")
    return infos


def _unsafe_member(name: str) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[\\/]", name)


def _load_folder(p: Path, *, max_bytes: int, image_embedder, name: str) -> Corpus:
    """A folder of images or Projector files. Symbolic links are never followed (they may point
    outside the folder, or in a loop); they are listed in the notes."""
    most = _limits().max_archive_members
    files: list[Path] = []
    links: list[str] = []
    for root, dirs, fnames in os.walk(p, followlinks=False):
        for d in dirs:
            if (Path(root) / d).is_symlink():
                links.append(str((Path(root) / d).relative_to(p)))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) / d).is_symlink())
        for f in sorted(fnames):
            if not f.startswith("."):
                fp = Path(root) / f
                if fp.is_symlink():
                    links.append(str(fp.relative_to(p)))
                elif fp.is_file():
                    files.append(fp)
                    if len(files) > most:
                        raise InputError(f"{p.name}: more than {most:,} files; at most that many are accepted")
    notes = [f"skipped {len(links)} symbolic link(s), which are not followed: {_listing(sorted(links))}"] if links else []
    if not files:
        raise InputError(f"{p.name}: the folder is empty" + (f" ({notes[0]})" if notes else ""))
    tsvs = [f for f in files if f.suffix.lower() == ".tsv" and f.parent == p]
    if tsvs and not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in files):
        corpus = load_paths(tsvs, max_bytes=max_bytes, image_embedder=image_embedder, name=name)
        corpus.notes.extend(notes)
        return corpus
    images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
    total = sum(f.stat().st_size for f in images)
    limit = _limits().archive_expansion * max_bytes
    if total > limit:
        raise InputError(f"{p.name}: its images total {_fmt_bytes(total)}, over the limit of {_fmt_bytes(limit)}")
    items = [(str(f.relative_to(p)), f.read_bytes) for f in files]
    return _images_corpus(items, source=p.name, notes=notes, image_embedder=image_embedder, name=name)


def _images_corpus(items: Iterable[tuple[str, Callable[[], bytes]]], *, source: str, notes: list[str],
                   image_embedder: ImageEmbedder | None, name: str) -> Corpus:
    """Decode images one by one (skipping what is not an image, and saying why), thumbnail, embed in batches."""
    import pandas as pd

    embed = image_embedder or pixel_embedder
    embed_size = getattr(image_embedder, "image_size", None) if image_embedder is not None else None
    embed_size = int(embed_size) if isinstance(embed_size, (int, np.integer)) and embed_size > 0 else None
    max_pixels = _limits().max_image_pixels

    non_images: list[str] = []
    archives: list[str] = []
    too_large: list[str] = []
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
        suffix = Path(relname).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            (archives if suffix in ARCHIVE_EXTENSIONS else non_images).append(relname)
            continue
        try:
            data = read()
        except Exception as exc:  # a corrupt member (bad CRC, encrypted, unsupported compression)
            undecodable.append(f"{relname} (could not read: {_short(exc, 80)})")
            continue
        try:
            im, (w, h) = _decode_image(data, max_pixels)
        except _TooLarge as exc:
            too_large.append(f"{relname} ({exc})")
            continue
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
    if archives:
        notes.append(f"skipped {len(archives)} archive(s) inside, which are not opened (no nested archives): "
                     f"{_listing(archives)}")
    if too_large:
        notes.append(f"skipped {len(too_large)} image(s) over the limit of {max_pixels / 1e6:g} megapixels: "
                     f"{_listing(too_large)}")
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


class _TooLarge(_Skip):
    pass


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first bytes of a PNG, GIF or BMP, without a decoder; None otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:4] == b"GIF8" and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h)
    return None


def _too_large(w: int, h: int) -> str:
    return f"{w}×{h} = {w * h / 1e6:,.0f} megapixels"


def _decode_image(data: bytes, max_pixels: int | None = None):
    """(RGB PIL image, (width, height)); _TooLarge over `max_pixels` (read from the header only, before
    any pixel is decoded), _Skip when it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    max_pixels = _limits().max_image_pixels if max_pixels is None else max_pixels
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise _TooLarge(_too_large(*size))
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
        w, h = im.size
        if w * h > max_pixels:
            raise _TooLarge(_too_large(w, h))
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:  # PIL's own limit, hit first
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise _TooLarge(f"{int(m.group(1)) / 1e6:,.0f} megapixels" if m else _short(exc, 80)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
            TypeError, KeyError, ZeroDivisionError, MemoryError) as exc:
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", _short(exc))  # PIL names our buffer
        raise _Skip(why or type(exc).__name__) from None
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


def _sanitize_meta(meta, *, copy: bool = True):
    """Column names as strings; cells that are lists, dicts or bytes become text. Only object columns
    are looked at (by position: names may repeat before they are made unique)."""
    import pandas as pd

    if copy:
        meta = meta.copy()
    meta.columns = _unique_names([str(c) for c in meta.columns])
    for j, dt in enumerate(meta.dtypes):
        if pd.api.types.is_object_dtype(dt):
            col = meta.iloc[:, j]
            if col.map(lambda v: isinstance(v, (list, tuple, dict, set, np.ndarray, bytes))).any():
                meta.isetitem(j, col.map(lambda v: v if v is None or isinstance(v, str) else str(v)))
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
